"""Per-domain statistics of a synthesized set, and its export to JSONL or Parquet for training mixes.

`domain_stats` is what `stats.json` holds: tasks written and requested, golden steps (total, mean, by difficulty),
kinds, write share (tasks whose golden actions write), refusal reasons, and the rejected drafts by reason.
`export(folder, out)` writes one row per task of a synthesized folder (one domain folder, or a folder of them): its
domain, id, split, kind, difficulty, the rendered customer request, golden actions, communicate_info and shown tools,
plus `task_json` (the whole τ² record) and `domain_dir` (the folder the `tau` environment loads it from), so a row
points back to a runnable task; the domains' statistics go beside it (`<out>.stats.json`: per domain, and totals).
Parquet needs pyarrow (the `synth` extra); JSONL needs nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError

EXPORT_FORMATS = (".jsonl", ".parquet")


def domain_stats(domain: str, tasks: Sequence[Mapping[str, Any]], rejections: Mapping[str, int], *, requested: int,
                 seed: int, tools: int) -> dict[str, Any]:
    """The statistics of one synthesized domain (see the module docstring)."""
    steps = [len(t["evaluation_criteria"]["actions"]) for t in tasks]
    meta = [t["orchestra"] for t in tasks]
    writing = sum(1 for m in meta if m.get("writes", 0) > 0)
    return {
        "domain": domain, "seed": seed, "requested": requested, "tasks": len(tasks), "tools": tools,
        "steps": sum(steps), "mean_steps": round(sum(steps) / len(steps), 3) if steps else 0.0,
        "by_difficulty": dict(sorted(Counter(str(m["difficulty"]) for m in meta).items())),
        "by_kind": dict(sorted(Counter(m["kind"] for m in meta).items())),
        "write_share": round(writing / len(tasks), 4) if tasks else 0.0,
        "refusal_reasons": dict(sorted(Counter(m["refusal_reason"] for m in meta if m.get("refusal_reason")).items())),
        "rejections": dict(sorted(rejections.items())),
        "rejected": sum(rejections.values()),
    }


def domain_folders(folder: Path) -> list[Path]:
    """The synthesized domain folders at `folder`: itself, or its subfolders with tasks.json and tools.json."""
    folder = Path(folder)
    if (folder / "tasks.json").exists():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / "tasks.json").exists()) if folder.is_dir() else []
    if not found:
        raise ConfigError(f"synthesized folder {folder}: no tasks.json in it or in its subfolders")
    return found


def rows(folder: Path) -> list[dict[str, Any]]:
    """One flat row per task of the synthesized set at `folder` (see the module docstring)."""
    from orchestra.envs.tau.grade import render_instructions

    out = []
    for domain_dir in domain_folders(folder):
        tasks = json.loads((domain_dir / "tasks.json").read_text())
        splits_file = domain_dir / "split_tasks.json"
        splits = json.loads(splits_file.read_text()) if splits_file.exists() else {}
        split_of = {i: name for name, ids in splits.items() for i in ids}
        for task in tasks:
            meta = task.get("orchestra") or {}
            criteria = task["evaluation_criteria"]
            out.append({
                "domain": domain_dir.name, "id": str(task["id"]), "split": split_of.get(str(task["id"]), ""),
                "kind": meta.get("kind", ""), "difficulty": int(meta.get("difficulty", len(criteria["actions"]))),
                "request": render_instructions(task["user_scenario"]["instructions"]),
                "actions": json.dumps([{"name": a["name"], "arguments": a["arguments"]} for a in criteria["actions"]]),
                "communicate_info": list(criteria.get("communicate_info") or []),
                "tools": list(meta.get("tools") or []), "refusal_reason": meta.get("refusal_reason") or "",
                "domain_dir": str(domain_dir.resolve()), "task_json": json.dumps(task, ensure_ascii=False),
            })
    return out


def collected_stats(folder: Path) -> dict[str, Any]:
    """Each domain's stats.json of the synthesized set at `folder`, by domain, plus the totals."""
    per_domain = {d.name: json.loads((d / "stats.json").read_text()) for d in domain_folders(folder)
                  if (d / "stats.json").exists()}
    tasks = sum(s["tasks"] for s in per_domain.values())
    writing = sum(s["write_share"] * s["tasks"] for s in per_domain.values())
    rejections: Counter[str] = Counter()
    for s in per_domain.values():
        rejections.update(s.get("rejections", {}))
    total = {"tasks": tasks, "steps": sum(s["steps"] for s in per_domain.values()),
             "write_share": round(writing / tasks, 4) if tasks else 0.0, "rejections": dict(sorted(rejections.items()))}
    return {"domains": per_domain, "total": total}


def export(folder: Path, out: Path) -> int:
    """Write the rows of `folder` to `out` (.jsonl or .parquet), and the per-domain statistics beside it
    (`<out>.stats.json`, see `collected_stats`); returns the number of rows."""
    out = Path(out)
    if out.suffix not in EXPORT_FORMATS:
        raise ConfigError(f"--out {out}: give a .jsonl or .parquet file")
    table = rows(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats_file = out.with_name(out.name + ".stats.json")
    stats_file.write_text(json.dumps(collected_stats(folder), indent=1, sort_keys=True) + "\n")
    if out.suffix == ".jsonl":
        with out.open("w") as handle:
            for row in table:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return len(table)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet export needs pyarrow: pip install 'orchestra[synth]'") from None
    pq.write_table(pa.Table.from_pylist(table), out)
    return len(table)
