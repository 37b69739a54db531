"""Writing an LLM-synthesized domain: the τ² folder the `tau` environment runs, and the rejection report.

The folder has the procedural generator's layout (`db.json`, `policy.md`, `tools.json`, `tasks.json`,
`split_tasks.json`, `stats.json`), so `orchestra env check tau --domain DIR`, `orchestra eval`, training and
`orchestra synth export` take it unchanged, plus:
- `schema.json`: the tables, their fields and the JSON schema of each table's typed data model;
- `tools.py`: the accepted model-written code of every tool (verified in the sandbox to behave as the declared tool
  in `tools.json`, which is what the environment runs: model-written code never runs outside the sandbox);
- `rejections.json`: per stage, items accepted, rejected (counted by reason), failed (infrastructure), and served
  from the cache; the records rejected inside accepted batches; and every rejected item with its reason.
Every file is written atomically; rewriting the folder from the same cache gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains.derived import ToolsFile
from orchestra.synth.export import domain_stats
from orchestra.synth.llm.cache import Outcome, write_atomic
from orchestra.synth.llm.schema import TableSchema, record_model

DETAIL_CHARS = 600


def rejection_report(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The rejection report of a run (see the module docstring)."""
    stages: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        s = stages.setdefault(o.stage, {"items": 0, "accepted": 0, "rejected": 0, "failed": 0, "cached": 0,
                                        "reasons": Counter()})
        s["items"] += 1
        s[o.status] += 1
        s["cached"] += o.cached
        if o.status != "accepted":
            s["reasons"][o.reason_key] += 1
    inner: Counter[str] = Counter()
    for o in outcomes:
        if o.accepted and isinstance(o.value, dict):
            inner.update(r["reason"].split(":", 1)[0] for r in o.value.get("rejected", ()))
    for s in stages.values():
        s["reasons"] = dict(sorted(s["reasons"].items()))
    items = [{"stage": o.stage, "item": o.item, "status": o.status, "reason": o.reason,
              "detail": o.detail[:DETAIL_CHARS]} for o in outcomes if not o.accepted]
    return {"stages": stages, "records_rejected": dict(sorted(inner.items())), "rejected_items": items}


def rejection_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """`stage/reason -> count` over rejected items and rejected records, for stats.json."""
    counts: Counter[str] = Counter()
    for stage, s in report["stages"].items():
        for reason, n in s["reasons"].items():
            counts[f"{stage}/{reason}"] += n
    for reason, n in report["records_rejected"].items():
        counts[f"records/{reason}"] += n
    return dict(sorted(counts.items()))


def write_domain(out: Path, *, domain: str, tables: Sequence[TableSchema], db: Mapping[str, Any], tools: ToolsFile,
                 code: Mapping[str, str], tasks: Sequence[dict[str, Any]], report: Mapping[str, Any], seed: int,
                 requested: int, run: Mapping[str, Any]) -> dict[str, Any]:
    """Write the folder (see the module docstring); returns its stats."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "db.json", {name: dict(rows) for name, rows in db.items()})
    write_atomic(out / "policy.md", policy(domain, tables, tools))
    write_atomic(out / "tools.json", tools.model_dump_json(indent=1, exclude_none=True) + "\n")
    write_atomic(out / "tools.py", tools_source(domain, code))
    _write_json(out / "schema.json", {"domain": domain, "tables": [
        {**t.model_dump(mode="json", exclude_none=True), "model": record_model(t).model_json_schema()}
        for t in tables]})
    _write_json(out / "tasks.json", list(tasks))
    ids = [t["id"] for t in tasks]
    test = [i for i in ids if _bucket(seed, i) == 0]
    _write_json(out / "split_tasks.json", {"train": [i for i in ids if i not in test], "test": test})
    _write_json(out / "rejections.json", report)
    stats = domain_stats(domain, tasks, rejection_counts(report), requested=requested, seed=seed,
                         tools=len(tools.tools))
    stats.update({"generator": "orchestra.llm/1", **run})
    _write_json(out / "stats.json", stats)
    return stats


def policy(domain: str, tables: Sequence[TableSchema], tools: ToolsFile) -> str:
    """A compact policy: who the agent serves, and the rules the declared tools enforce."""
    kept = [t for t in tables if t.name in tools.tables]
    things = ", ".join(t.name.replace("_", " ") for t in kept) or "records"
    lines = [f"# {domain.replace('_', ' ').title()} agent policy", "",
             f"As a {domain.replace('_', ' ')} agent, you help customers with their {things}.", "",
             "- Look records up before acting; never make up information.",
             "- Make a change only when the customer asks for it; tell them what you found or did."]
    kinds = {c.type for t in tools.tools for c in t.constraints}
    if "changes_value" in kinds:
        lines.append("- A change must change something: a field that already has the value is left as it is.")
    if "exists" in kinds:
        lines.append("- A new record must belong to existing records.")
    if "not_referenced" in kinds:
        lines.append("- A record still referenced by another cannot be deleted.")
    if "non_negative" in kinds:
        lines.append("- Amounts and counts are never negative.")
    return "\n".join(lines) + "\n"


def tools_source(domain: str, code: Mapping[str, str]) -> str:
    header = (f'"""Model-written tools of the synthesized {domain} domain, kept for inspection.\n\nEach passed the '
              "static checks and behaved as its declaration in tools.json on probe calls in the sandbox. The tau "
              'environment runs tools.json, never this file.\n"""\n')
    return header + "".join(f"\n\n# ---- {name}\n{body.strip()}\n" for name, body in sorted(code.items()))


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=1, ensure_ascii=False, sort_keys=False) + "\n")


def _bucket(seed: int, task_id: str) -> int:
    return int(hashlib.sha256(f"{seed}/{task_id}".encode()).hexdigest(), 16) % 5
