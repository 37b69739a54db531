"""The LLM-driven synthesis pipeline: a domain from nothing, stage by stage, over any `ChatBackend`.

Stages, in order (each item cached and resumable: `orchestra.synth.llm.items`):
1. tables: the model names `tables` tables (up to `attempts` tries);
2. schema: per table, its fields (tries per table); a table referencing a table with no schema is dropped;
3. data models: one pydantic model per table (`schema.record_model`), no model call;
4. records: per table, parents first, batches of `batch` records; each record is checked (schema conformity,
   cross-field consistency) and each batch is reviewed by the judge model (the realism check: records it flags, or
   every record of a batch it gives no verdict on, are dropped);
5. tools: planned from the schema (`toolplan`), the code written by the model, statically checked, then run in the
   sandbox against a copy of the database and compared with the declared tool (`toolcheck`; tries per tool);
6. intents: `tasks` customer intents, alternating writes and reads, each about a few records;
7. tasks: per intent, a τ² task verified by replaying its golden actions (`tasks.check_task`); duplicates dropped;
8. evolution: per task, a harder version (more golden actions), verified the same way;
9. the "too easy" filter, when strong models are given (`easy`): tasks all of them solve at pass@k are dropped.
Two filters record their own rejections: `references` (a table whose references point at a table with no schema)
and `dedup` (a task or evolved task with the same golden actions as an earlier one).
Nothing the model writes can crash the run: each bad item is rejected with its reason (`rejections.json`).
Determinism: inputs and per-item seeds come from `seed` and the item; a model that answers the same question the
same way gives the same folder.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains.derived import ToolDef, ToolsFile
from orchestra.envs.tau.env import TauEnvironment
from orchestra.errors import ConfigError
from orchestra.synth.llm import prompts
from orchestra.synth.llm.cache import CACHE_DIR, Outcome, StageCache, digest
from orchestra.synth.llm.easy import is_too_easy, judge_task
from orchestra.synth.llm.folder import rejection_report, write_domain
from orchestra.synth.llm.items import ItemRunner, Model, Rejected, extract_code, extract_json
from orchestra.synth.llm.schema import TableSchema, check_record, parse_schema, parse_tables, record_model
from orchestra.synth.llm.tasks import check_task, parse_intent, signature, task_json, verifier
from orchestra.synth.llm.toolcheck import sandbox_check, static_check
from orchestra.synth.llm.toolplan import PlannedTool, plan_tools, table_def


@dataclass(frozen=True)
class SynthSettings:
    """What to synthesize. Every count is at least 1 (`check`)."""

    domain: str
    out: Path
    tables: int = 3
    records: int = 6
    """Records per table."""
    tasks: int = 6
    """Intents (each gives at most one task, plus its evolved version)."""
    seed: int = 0
    batch: int = 5
    """Records per model call."""
    attempts: int = 2
    """Tries per table, schema and tool before the item stays rejected."""
    evolve: bool = True
    concurrency: int = 4
    easy_k: int = 2
    """Trials per strong model in the "too easy" filter (pass@k); the filter runs only when strong models are given."""

    def check(self) -> None:
        for name in ("tables", "records", "tasks", "batch", "attempts", "concurrency", "easy_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if not self.domain.strip() or not self.domain.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"--domain {self.domain!r}: use letters, digits, '-' or '_'")
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out}: is a file, not a folder")


@dataclass(frozen=True)
class SynthResult:
    folder: Path
    stats: dict[str, Any]
    report: dict[str, Any]


async def synthesize_llm(settings: SynthSettings, model: Model, judge: Model | None = None,
                         strong: Sequence[Model] = ()) -> SynthResult:
    """Run every stage (see the module docstring) and write the domain folder at `settings.out`."""
    settings.check()
    runner = ItemRunner(StageCache(settings.out), concurrency=settings.concurrency, seed=settings.seed)
    run = _Run(settings, model, judge or model, runner)
    tables = await run.schemas(await run.tables())
    db = await run.records(tables)
    tables = [t for t in tables if db.get(t.name)]
    tools, code = await run.tools(tables, db)
    tasks = await run.tasks(tools, db) if tools.tools else []
    if strong and tasks:
        tasks = await run.drop_easy(strong, tables, db, tools, code, tasks)
    stats = run.write(tables, db, tools, code, tasks)
    return SynthResult(settings.out, stats, rejection_report(runner.outcomes))


class _Run:
    """One pipeline run's state; each method is one stage (see the module docstring)."""

    def __init__(self, settings: SynthSettings, model: Model, judge: Model, runner: ItemRunner):
        self.s, self.model, self.judge, self.runner = settings, model, judge, runner

    async def _tries(self, stage: str, item: str, inputs: dict[str, Any], messages: Callable[[int], list],
                     check: Callable[[str], Any], model: Model | None = None) -> Outcome:
        """Up to `attempts` items (attempt n is its own cached item) until one is accepted."""
        outcome: Outcome | None = None
        for attempt in range(self.s.attempts):
            outcome = await self.runner.run(stage, f"{item}#{attempt}", {**inputs, "attempt": attempt},
                                            messages(attempt), model or self.model, _async(check))
            if outcome.accepted:
                break
        assert outcome is not None
        return outcome

    async def tables(self) -> list[dict[str, Any]]:
        s = self.s
        outcome = await self._tries("tables", s.domain, {"domain": s.domain, "count": s.tables},
                                    lambda a: prompts.tables(s.domain, s.tables, a),
                                    lambda text: parse_tables(text, s.tables))
        return outcome.value if outcome.accepted else []

    async def schemas(self, specs: list[dict[str, Any]]) -> list[TableSchema]:
        names = [t["name"] for t in specs]

        async def one(spec: dict[str, Any]) -> Outcome:
            return await self._tries("schema", spec["name"], {"table": spec, "tables": names},
                                     lambda a: prompts.schema(self.s.domain, spec, names, a),
                                     lambda text: parse_schema(text, spec, names))

        outcomes = await asyncio.gather(*(one(t) for t in specs))
        tables = [TableSchema.model_validate(o.value) for o in outcomes if o.accepted]
        while True:  # a table whose references point at a table with no schema cannot get valid records
            kept = {t.name for t in tables}
            orphans = [t for t in tables if any(f.references not in kept for f in t.references)]
            if not orphans:
                return tables
            for t in orphans:
                self.runner.outcomes.append(Outcome(stage="references", item=t.name, status="rejected",
                                                    reason="references a table with no schema"))
            tables = [t for t in tables if t not in orphans]

    async def records(self, tables: list[TableSchema]) -> dict[str, dict[str, dict[str, Any]]]:
        db: dict[str, dict[str, dict[str, Any]]] = {}
        for level in _levels(tables):
            await asyncio.gather(*(self._table_records(t, db) for t in level))
        return db

    async def _table_records(self, table: TableSchema, db: dict[str, dict[str, dict[str, Any]]]) -> None:
        model = record_model(table)
        rows = db.setdefault(table.name, {})
        for batch in range((self.s.records + self.s.batch - 1) // self.s.batch):
            count = min(self.s.batch, self.s.records - batch * self.s.batch)
            refs = {f.name: sorted(db.get(f.references or "", {}))[:12] for f in table.references}
            inputs = {"table": table.model_dump(mode="json"), "count": count, "refs": refs, "taken": sorted(rows),
                      "batch": batch}

            def check(text: str, taken: frozenset[str] = frozenset(rows)) -> dict[str, Any]:
                return _check_batch(text, table, model, set(taken), db)

            outcome = await self.runner.run("records", f"{table.name}/{batch}", inputs, prompts.records(
                self.s.domain, table.model_dump(mode="json", exclude_none=True), count, refs, sorted(rows), batch),
                self.model, _async(check))
            if not outcome.accepted:
                continue
            batch_rows = outcome.value["accepted"]
            flagged = await self._realism(table, batch, batch_rows)
            for row in batch_rows:
                if row[table.key] not in flagged:
                    rows[row[table.key]] = row

    async def _realism(self, table: TableSchema, batch: int, rows: list[dict[str, Any]]) -> set[str]:
        keys = {r[table.key] for r in rows}

        def check(text: str) -> list[str]:
            raw = extract_json(text)
            flagged = raw.get("unrealistic") if isinstance(raw, dict) else None
            if not isinstance(flagged, list):
                raise Rejected("realism: no verdict")
            return sorted({str(f.get("key")) for f in flagged if isinstance(f, dict)} & keys)

        outcome = await self.runner.run("realism", f"{table.name}/{batch}", {"table": table.name, "rows": rows},
                                        prompts.realism(self.s.domain, table.name, rows), self.judge, _async(check))
        return set(outcome.value) if outcome.accepted else keys

    async def tools(self, tables: list[TableSchema], db: dict[str, Any]) -> tuple[ToolsFile, dict[str, str]]:
        by_name = {t.name: t for t in tables}
        planned = plan_tools(tables)

        async def one(p: PlannedTool) -> Outcome:
            table = by_name[p.tool.table]
            example = db[table.name][sorted(db[table.name])[0]]
            spec = {"signature": p.signature, "contract": p.contract}

            async def check(text: str) -> dict[str, Any]:
                code = extract_code(text)
                static_check(code, p)
                await sandbox_check(code, p, table_def(table), db)
                return {"tool": p.tool.model_dump(mode="json"), "code": code}

            return await self._tries("tools", p.tool.name, {**spec, "db": db, "tool": p.tool.model_dump(mode="json")},
                                     lambda a: prompts.tool_code(self.s.domain, spec, table.model_dump(
                                         mode="json", exclude_none=True), example), check)

        outcomes = await asyncio.gather(*(one(p) for p in planned))
        accepted = [o.value for o in outcomes if o.accepted]
        tools = ToolsFile(domain=self.s.domain, tables={t.name: table_def(t) for t in tables},
                          tools=tuple(ToolDef.model_validate(v["tool"]) for v in accepted))
        return tools, {v["tool"]["name"]: v["code"] for v in accepted}

    async def tasks(self, tools: ToolsFile, db: dict[str, Any]) -> list[dict[str, Any]]:
        ctx = verifier(tools, db)
        described = [_describe(t) for t in tools.tools]
        has_writes = any(t.kind in ("create", "update", "delete") for t in tools.tools)

        async def one(i: int) -> tuple[int, dict[str, Any], Outcome | None]:
            rng = random.Random(f"{self.s.seed}/{self.s.domain}/intent/{i}")
            rows = _sample_rows(rng, tools, db)
            kind = "write" if has_writes and i % 2 == 0 else "read"
            intent = await self.runner.run("intents", f"intent_{i:04d}", {"rows": rows, "kind": kind, "i": i},
                                           prompts.intent(self.s.domain, described, rows, kind, i), self.model,
                                           _async(parse_intent))
            if not intent.accepted:
                return i, rows, None
            task = await self.runner.run("tasks", f"task_{i:04d}", {"rows": rows, "intent": intent.value},
                                         prompts.task(self.s.domain, described, rows, intent.value), self.model,
                                         _async(lambda text: check_task(text, ctx)))
            return i, {"rows": rows, "intent": intent.value}, task

        done = await asyncio.gather(*(one(i) for i in range(self.s.tasks)))
        seen: set[str] = set()
        out = self._unique([(f"task_{i:04d}", o, c["intent"]) for i, c, o in done if o and o.accepted], seen)
        if self.s.evolve:
            async def harder(task: dict[str, Any], rows: dict[str, Any]) -> Outcome:
                original = {k: v for k, v in task.items() if k not in ("kind", "writes")}
                return await self.runner.run("evolve", task["id"], {"task": original, "rows": rows},
                                             prompts.evolve(self.s.domain, described, rows, original), self.model,
                                             _async(lambda text: check_task(text, ctx, longer_than=len(
                                                 task["actions"]))))

            rows_of = {f"task_{i:04d}": c["rows"] for i, c, o in done if o and o.accepted}
            evolved = await asyncio.gather(*(harder(t, rows_of[t["id"]]) for t in out))
            out += self._unique([(f"evolved_{t['id'].split('_')[1]}", o, t["intent"]) for t, o in zip(
                out, evolved, strict=True) if o.accepted], seen, parents=[t["id"] for t, o in zip(
                    out, evolved, strict=True) if o.accepted])
        return [task_json(t, t["id"], _shown(t, tools, self.s.seed), self.s.seed, intent=t["intent"],
                          **({"parent": t["parent"]} if "parent" in t else {})) for t in out]

    def _unique(self, found: Sequence[tuple[str, Outcome, str]], seen: set[str],
                parents: Sequence[str] = ()) -> list[dict[str, Any]]:
        out = []
        for j, (task_id, outcome, intent) in enumerate(found):
            sig = signature(outcome.value)
            if sig in seen:
                self.runner.outcomes.append(Outcome(stage="dedup", item=task_id, status="rejected",
                                                    reason="duplicate", detail=f"same golden actions ({outcome.stage})"))
                continue
            seen.add(sig)
            out.append({**outcome.value, "id": task_id, "intent": intent,
                        **({"parent": parents[j]} if parents else {})})
        return out

    async def drop_easy(self, strong: Sequence[Model], tables: list[TableSchema], db: dict[str, Any],
                        tools: ToolsFile, code: dict[str, str], tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop the tasks every strong model solves at pass@k (`easy`), run on the folder as the env loads it."""
        scratch = self.s.out / CACHE_DIR / "too_easy" / digest("folder", "", "", tasks)
        self.write(tables, db, tools, code, tasks, folder=scratch)
        env = TauEnvironment(self.s.domain, path=scratch)
        identity = "|".join(m.identity for m in strong)

        async def one(task: dict[str, Any]) -> Outcome:
            async def work() -> dict[str, int | None]:
                solved_at = await judge_task(env, task["id"], strong, self.s.easy_k)
                if is_too_easy(solved_at, strong):
                    raise Rejected("too_easy", f"every strong model solved it within {self.s.easy_k} trials: "
                                   f"{solved_at}")
                return solved_at

            return await self.runner.local("too_easy", task["id"], {"task": task, "k": self.s.easy_k}, identity,
                                           work)

        outcomes = await asyncio.gather(*(one(t) for t in tasks))
        return [t for t, o in zip(tasks, outcomes, strict=True) if o.accepted]

    def write(self, tables: list[TableSchema], db: dict[str, Any], tools: ToolsFile, code: dict[str, str],
              tasks: list[dict[str, Any]], folder: Path | None = None) -> dict[str, Any]:
        kept = {name: rows for name, rows in db.items() if name in tools.tables}
        run = {"model": self.model.identity, "judge": self.judge.identity, "model_calls": self.runner.calls,
               "cost_usd": round(self.runner.cost_usd, 6), "cache_hits": sum(self.runner.cache.hits.values())}
        return write_domain(folder or self.s.out, domain=self.s.domain, tables=tables, db=kept, tools=tools, code=code,
                            tasks=tasks, report=rejection_report(self.runner.outcomes), seed=self.s.seed,
                            requested=self.s.tasks, run=run)


def _async(check: Callable[[str], Any]) -> Callable[[str], Awaitable[Any]]:
    async def run(text: str) -> Any:
        value = check(text)
        return await value if asyncio.iscoroutine(value) else value
    return run


def _check_batch(text: str, table: TableSchema, model: Any, taken: set[str], db: dict[str, Any]) -> dict[str, Any]:
    """The records of one batch that pass `check_record`, and why the others did not."""
    raw = extract_json(text)
    rows = raw.get("records") if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not rows:
        raise Rejected("record_schema: no records list")
    accepted, rejected = [], []
    for row in rows:
        try:
            accepted.append(check_record(table, model, row, taken, db))
            taken.add(row[table.key])
        except Rejected as exc:
            rejected.append({"reason": exc.reason, "detail": exc.detail[:200]})
    if not accepted:
        raise Rejected(rejected[0]["reason"], f"all {len(rows)} records rejected: {rejected[0]['detail']}")
    return {"accepted": accepted, "rejected": rejected}


def _levels(tables: list[TableSchema]) -> list[list[TableSchema]]:
    """Tables grouped so that every table comes after the tables it references (a cycle's rest goes last)."""
    done: set[str] = set()
    levels, left = [], list(tables)
    while left:
        ready = [t for t in left if all(f.references in done or f.references == t.name for f in t.references)]
        ready = ready or left
        levels.append(ready)
        done |= {t.name for t in ready}
        left = [t for t in left if t not in ready]
    return levels


def _describe(tool: ToolDef) -> dict[str, Any]:
    params = {p.name: (list(p.enum) if p.enum else p.type) for p in tool.parameters}
    return {"name": tool.name, "table": tool.table, "description": tool.description, "parameters": params}


def _sample_rows(rng: random.Random, tools: ToolsFile, db: dict[str, Any]) -> dict[str, Any]:
    """A record of a random table with tools, and the records it references (what an intent is about)."""
    tables = sorted({t.table for t in tools.tools})
    table = rng.choice(tables)
    key = rng.choice(sorted(db[table]))
    record = db[table][key]
    rows = {table: {key: record}}
    for other in sorted(db):
        for value in record.values():
            if other != table and isinstance(value, str) and value in db[other]:
                rows.setdefault(other, {})[value] = db[other][value]
    return rows


def _shown(task: dict[str, Any], tools: ToolsFile, seed: int) -> list[str]:
    """The tools a task shows: those its golden actions use, and one distractor of the same tables."""
    used = list(dict.fromkeys(a["name"] for a in task["actions"]))
    tables = {t.table for t in tools.tools if t.name in used}
    others = [t.name for t in tools.tools if t.name not in used and t.table in tables]
    rng = random.Random(f"{seed}/{task['id']}")
    return used + rng.sample(others, min(1, len(others)))
