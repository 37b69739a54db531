"""Run folders as rows: what `orchestra export` writes to Parquet and what the trajectory viewer shows.

A run folder is either an evaluation run (`items.jsonl`: one graded item per line, trajectory included) or a served
one (`trajectories.jsonl`, written by `orchestra serve --trajectories` or `orchestra run --save`); a `.jsonl` file of
either kind works too. `load_run` reads both into `RunItem`s (a truncated last line, from a crash, is skipped).

Messages are exported in OpenAI's chat shape (`openai_messages`): `{"role", "content", "tool_calls": [{"id", "type":
"function", "function": {"name", "arguments": "<json>"}}], "tool_call_id", "name"}`, every key present (None when
unused), so a column of them loads into a `datasets.Dataset` and through `tokenizer.apply_chat_template` unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError
from orchestra.trajectory import read_trajectories, trajectory_from_dict
from orchestra.types import Trajectory

ITEMS = "items.jsonl"
TRAJECTORIES = "trajectories.jsonl"


@dataclass(frozen=True)
class RunItem:
    """One episode of a run, with its grade when the run was an evaluation (`solved` is None otherwise)."""

    id: str
    solved: bool | None
    preferences: dict[str, Any] | None
    trajectory: Trajectory

    @property
    def instruction(self) -> str:
        return str((self.preferences or {}).get("instruction") or "")


def load_run(path: str | Path) -> list[RunItem]:
    """The items of a run folder (or of one of its JSONL files); `ConfigError` naming the path otherwise."""
    path = Path(path)
    items, trajectories = (path / ITEMS, path / TRAJECTORIES) if path.is_dir() else (path, path)
    if path.is_dir() and not items.is_file() and not trajectories.is_file():
        raise ConfigError(f"{path}: no {ITEMS} (an evaluation run) or {TRAJECTORIES} (a served run) in it")
    if not path.exists():
        raise ConfigError(f"{path}: no such run folder or file")
    try:
        if items.is_file() and (path.is_dir() or _is_items_file(items)):
            return [_from_record(r) for r in _read_items(items)]
        return [RunItem(t.task_id, None, t.metadata.get("preferences"), t) for t in read_trajectories(trajectories)]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a run this version can read ({exc})") from None


def openai_messages(trajectory: Trajectory) -> list[dict[str, Any]]:
    out = []
    for m in trajectory.messages:
        shaped = m.to_openai()
        out.append({"role": shaped["role"], "content": shaped["content"], "tool_calls": shaped.get("tool_calls"),
                    "tool_call_id": shaped.get("tool_call_id"), "name": shaped.get("name")})
    return out


def item_row(item: RunItem) -> dict[str, Any]:
    """One row per item: outcome, totals, termination, preference, and the conversation in OpenAI's shape."""
    t = item.trajectory
    return {
        "id": item.id, "task_id": t.task_id, "solved": item.solved, "final_answer": t.final_answer,
        "termination": str(t.termination), "error": t.error, "orchestrator": t.orchestrator,
        "turns": len(t.turns), "calls": len(t.observations), "format_errors": t.format_errors,
        "cost_usd": t.cost_usd, "orchestrator_cost_usd": t.orchestrator_cost_usd, "tool_cost_usd": t.tool_cost_usd,
        "latency_s": t.latency_s, "tool_counts": [{"tool": k, "calls": v} for k, v in sorted(t.tool_counts().items())],
        "preference": item.instruction or None, "messages": openai_messages(t),
    }


def call_rows(item: RunItem) -> list[dict[str, Any]]:
    """One row per tool call of the item: which turn, which tool (and target model), status, cost, latency."""
    rows = []
    for turn in item.trajectory.turns:
        arguments = {c.id: c.arguments for c in turn.completion.tool_calls}
        for o in turn.observations:
            rows.append({"item_id": item.id, "turn": turn.index, "call_id": o.call_id, "name": o.name,
                         "target": o.target, "status": o.status, "cost_usd": o.cost_usd, "latency_s": o.latency_s,
                         "arguments": json.dumps(arguments.get(o.call_id, {}), ensure_ascii=False),
                         "content": o.content})
    return rows


def _is_items_file(path: Path) -> bool:
    with path.open() as handle:
        first = handle.readline()
    try:
        return "trajectory" in json.loads(first)
    except json.JSONDecodeError:
        return False


def _read_items(path: Path) -> list[dict[str, Any]]:
    from orchestra.evaluate.store import read_items

    return read_items(path)


def _from_record(record: dict[str, Any]) -> RunItem:
    return RunItem(str(record["id"]), bool(record["solved"]) if "solved" in record else None,
                   record.get("preferences"), trajectory_from_dict(record["trajectory"]))
