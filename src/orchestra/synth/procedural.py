"""Procedural ToolScale synthesis (no LLM): from a domain's db.json and policy.md, a τ²-format folder of verified tasks.

`synthesize(path, n, seed, out)` reads one domain folder (db.json + policy.md), or a folder of such folders (N is
spread over them, the remainder to the first), and writes per domain a folder the `tau` environment runs as is:
- `db.json` (the source data, unchanged), `policy.md` (derived, compact: `synth.derive.derive_policy`),
  `tools.json` (the derived tools, `orchestra.envs.tau.domains.derived`), `tasks.json` (τ² task schema),
  `split_tasks.json` (train/test, 80/20 by a hash of seed and id) and `stats.json` (`synth.export.domain_stats`).

Task i gets a target difficulty d = 1 + i mod 4 (its number of golden actions), a preferred kind (kinds take turns
every four tasks; half the attempts use it, the rest any kind), and its own random generator seeded
from (seed, domain, i): the output depends on the seed only, never on the order or the machine. A builder (`BUILDERS`)
drafts a task of that difficulty for one kind:
- read: look records up (by id, or find them first by e-mail/name with a search) and tell the customer fields of
  them, or of the record one of them references (`communicate_info` holds the values);
- write: read a record, then change one or two of its fields (a status, a preference, a contact e-mail);
- multi: two records, each read and changed;
- create / delete: read the parent record(s), then create a child record (its new id is to be communicated); read a
  record, then delete it;
- refusal: the customer asks for a change the rules forbid (a final status, a field the policy freezes); golden
  actions are the reads that show why, the database must stay unchanged and the reason (the blocking current
  value) is to be communicated; at d >= 3 mixed with an allowed change of another record.
Every draft is verified by replaying its golden actions through the same tool functions the environment binds: no
action fails; write kinds change the database and the others do not; every communicated value appears in what the
golden reads returned (within the first `REVEAL_CHARS` characters of one output) and is distinctive (not "yes",
"no", ...); the refused change really raises `ToolError`; no task repeats another's actions. A failed draft is
recorded by reason (`stats.json` `rejections`) and the builder tries again, up to `MAX_ATTEMPTS`; then the nearest
other difficulty is tried (a domain without writes gives reads only). Each task shows the tools its golden actions
use, the refused tool, and distractors (`orchestra.tools`): one for difficulty 1-2 (not a search), one to three
above, so prompts stay short.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains import Db, ToolError, base_digests, tool_template
from orchestra.envs.tau.domains.derived import build_domain
from orchestra.envs.tau.grade import call_function, communicated, normalize_text
from orchestra.errors import ConfigError
from orchestra.synth import builders
from orchestra.synth.derive import derive_policy, derive_tools
from orchestra.synth.drafting import Context, Draft
from orchestra.synth.export import domain_stats
from orchestra.synth.schema_infer import infer_schema, load_db
from orchestra.tools.toolbox import render_content

GENERATOR = "orchestra.procedural/1"
MAX_ATTEMPTS = 16
WRITE_KINDS = frozenset({"write", "multi", "create", "delete"})
REVEAL_CHARS = 1000
"""A communicated value must appear this early in a golden read's output: observations may be cut for small
orchestrators (the `tau` environment's training default keeps 1,200 characters)."""
WEAK_INFO = frozenset({"yes", "no", "none", "null", "true", "false", "n/a", "na", "ok", "0", "1"})


@dataclass(frozen=True, slots=True)
class DomainResult:
    """One synthesized domain: where it was written and its statistics (as in its stats.json)."""

    name: str
    folder: Path
    stats: Mapping[str, Any]


def synthesize(path: Path, n: int, seed: int, out: Path) -> list[DomainResult]:
    """Synthesize `n` tasks from one domain folder, or spread over a folder of domain folders (see module docs)."""
    path, out = Path(path), Path(out)
    if n < 1:
        raise ConfigError(f"--n must be at least 1 (got {n})")
    if not path.is_dir():
        raise ConfigError(f"--db {path}: not a folder (give a domain folder with db.json and policy.md)")
    if (path / "db.json").exists():
        return [synthesize_domain(path, n, seed, out)]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and (p / "db.json").exists())
    if not folders:
        raise ConfigError(f"--db {path}: no db.json in it or in its subfolders")
    counts = [n // len(folders) + (i < n % len(folders)) for i in range(len(folders))]
    return [synthesize_domain(f, k, seed, out / f.name) for f, k in zip(folders, counts, strict=True) if k]


def synthesize_domain(source: Path, n: int, seed: int, out: Path) -> DomainResult:
    """One domain folder -> one τ²-format folder of `n` verified tasks (fewer only if the data cannot give more)."""
    ctx = load_context(source)
    tasks: list[dict[str, Any]] = []
    rejections: Counter[str] = Counter()
    seen: set[str] = set()
    for i in range(n):
        task = _one_task(ctx, i, seed, seen, rejections)
        if task is not None:
            tasks.append(task)
    _write_folder(source, out, ctx, tasks, seed)
    stats = domain_stats(ctx.schema.name, tasks, rejections, requested=n, seed=seed, tools=len(ctx.tools.tools))
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return DomainResult(ctx.schema.name, out, stats)


def load_context(source: Path) -> Context:
    """Read, infer and derive one domain (bad input: one-line `ConfigError`s naming the file)."""
    db_file, policy_file = source / "db.json", source / "policy.md"
    if not db_file.exists():
        raise ConfigError(f"domain folder {source}: no db.json")
    if not policy_file.exists():
        raise ConfigError(f"domain folder {source}: no policy.md (the policy the tools' rules come from)")
    data = load_db(db_file)
    schema = infer_schema(source.name, data, where=f"database {db_file}")
    tools, frozen = derive_tools(schema, policy_file.read_text())
    domain = build_domain(tools)
    base = {t.name: _keyed(data[t.name], t.key) for t in schema.tables}
    templates = {f.__name__: tool_template(f, write=w) for fs, w in ((domain.read_tools, False),
                                                                     (domain.write_tools, True)) for f in fs}
    return Context(schema, tools, frozen, domain, templates, base, base_digests(base),
                   {t.name: t for t in tools.tools})


def verify(ctx: Context, draft: Draft) -> str | None:
    """None when the draft holds (see the module docstring), else the rejection reason."""
    db = Db(ctx.base, base_digests=ctx.digests)
    before = db.canonical_hash()
    outputs = []
    for name, arguments in draft.actions:
        try:
            text = render_content(call_function(ctx.domain, ctx.templates, db, name, arguments))
            outputs.append(text[:REVEAL_CHARS])
        except Exception:  # noqa: BLE001 - any failure of a golden action rejects the draft
            return "golden_action_failed"
    changed = db.canonical_hash() != before
    writes = draft.kind in WRITE_KINDS or draft.mixed
    if writes and not changed:
        return "write_changes_nothing"
    if not writes and changed:
        return "read_changes_db"
    for info in draft.communicate:
        if normalize_text(info) in WEAK_INFO or len(normalize_text(info)) < 2:
            return "info_not_distinctive"
        if not communicated(info, outputs):
            return "info_not_revealed_by_reads"
    if draft.refused is not None:
        name, arguments = draft.refused
        try:
            call_function(ctx.domain, ctx.templates, db, name, arguments)
        except ToolError:
            return None
        except Exception:  # noqa: BLE001 - e.g. invalid arguments: not the rule the task is about
            return "refusal_not_by_rule"
        return "refused_change_is_allowed"
    return None


def _one_task(ctx: Context, i: int, seed: int, seen: set[str], rejections: Counter[str]) -> dict[str, Any] | None:
    """Task i at its target difficulty, else at the nearest one the domain can give (the data decides)."""
    target = 1 + i % 4
    rng = random.Random(f"{seed}/{ctx.schema.name}/{i}")
    kinds = list(dict.fromkeys(b.kind for b in builders.BUILDERS))
    preferred = kinds[(i // 4) % len(kinds)]  # kinds take turns, so every kind appears in small sets too
    for difficulty in sorted(range(1, 5), key=lambda d: (abs(d - target), -d)):
        choices = [b for b in builders.BUILDERS if difficulty in b.difficulties]
        first = [b for b in choices if b.kind == preferred] or choices
        for attempt in range(MAX_ATTEMPTS):
            draft = rng.choice(first if attempt < MAX_ATTEMPTS // 2 else choices).build(ctx, rng, difficulty)
            if draft is None:
                continue  # this builder has no candidate here (e.g. no final statuses in the domain)
            signature = json.dumps([draft.actions, draft.refused], sort_keys=True)
            reason = "duplicate" if signature in seen else verify(ctx, draft)
            if reason is None:
                seen.add(signature)
                return _task_json(ctx, draft, f"{draft.kind}_{i:04d}", rng, seed)
            rejections[reason] += 1
        rejections[f"no_task_at_difficulty_{difficulty}"] += 1
    return None


def _task_json(ctx: Context, draft: Draft, task_id: str, rng: random.Random, seed: int) -> dict[str, Any]:
    used = list(dict.fromkeys([n for n, _ in draft.actions] + ([draft.refused[0]] if draft.refused else [])))
    tables = {ctx.tool_defs[n].table for n in used if n in ctx.tool_defs}
    light = len(draft.actions) <= 2  # easy tasks: one distractor, not a search (its field enum is long)
    near = [t.name for t in ctx.tools.tools if t.name not in used and t.table in tables
            and not (light and t.kind == "search")]
    far = [t.name for t in ctx.tools.tools if t.name not in used and t.table not in tables
           and not (light and t.kind == "search")]
    pool = rng.sample(near, min(len(near), 2)) + rng.sample(far, min(len(far), 1))
    distractors = pool[: 1 if light else rng.randint(1, 3)]
    return {
        "id": task_id,
        "description": {"purpose": draft.purpose},
        "user_scenario": {"instructions": draft.scenario.to_json()},
        "evaluation_criteria": {
            "actions": [{"action_id": f"{task_id}_{j}", "name": name, "arguments": arguments,
                         "requestor": "assistant"} for j, (name, arguments) in enumerate(draft.actions)],
            "communicate_info": list(draft.communicate),
            "reward_basis": ["DB", "COMMUNICATE"],
        },
        "orchestra": {"tools": used + distractors, "difficulty": len(draft.actions), "kind": draft.kind,
                      "writes": sum(ctx.tool_defs[n].kind in ("create", "update", "delete") for n, _ in draft.actions),
                      "refusal_reason": draft.refusal_reason,
                      "refused": {"name": draft.refused[0], "arguments": draft.refused[1]} if draft.refused else None,
                      "generator": GENERATOR, "seed": seed},
    }


def _write_folder(source: Path, out: Path, ctx: Context, tasks: list[dict[str, Any]], seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "db.json").resolve() != (source / "db.json").resolve():
        shutil.copyfile(source / "db.json", out / "db.json")
    policy = derive_policy(ctx.schema, ctx.tools, ctx.frozen, (source / "policy.md").read_text())
    (out / "policy.md").write_text(policy)
    (out / "tools.json").write_text(ctx.tools.model_dump_json(indent=1, exclude_none=True) + "\n")
    (out / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    test = [t["id"] for t in tasks if _bucket(seed, t["id"]) == 0]
    train = [t["id"] for t in tasks if _bucket(seed, t["id"]) != 0]
    (out / "split_tasks.json").write_text(json.dumps({"train": train, "test": test}, indent=1) + "\n")


def _bucket(seed: int, task_id: str) -> int:
    return int(hashlib.sha256(f"{seed}/{task_id}".encode()).hexdigest(), 16) % 5


def _keyed(rows: Any, key: str) -> dict[str, dict[str, Any]]:
    return rows if isinstance(rows, dict) else {str(r[key]): r for r in rows}

