"""Trajectories to and from plain JSON-able dicts: one JSONL line per episode.

`trajectory_to_dict` writes every field of the frozen records in `orchestra.types` (messages, turns with their
completions and observations, token ids and logprobs of a local orchestrator, termination, final answer, metadata);
`trajectory_from_dict(trajectory_to_dict(t)) == t` for every trajectory whose metadata is JSON-able.

Invariants
- The dict holds only JSON types (str, int, float, bool, None, list, dict); tuples become lists and come back as
  tuples, so a round trip gives equal frozen records.
- Fields left at their default are still written: a reader never depends on this module's defaults staying the same.
- `FORMAT_VERSION` is written as `"format"` and checked on read; a line of an unknown format is a `ValueError`, never
  a silently half-read trajectory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from orchestra.types import (
    Completion,
    Message,
    Observation,
    Termination,
    ToolCall,
    Trajectory,
    Turn,
    Usage,
)

FORMAT_VERSION = 1


def trajectory_to_dict(trajectory: Trajectory) -> dict[str, Any]:
    """A JSON-able dict holding everything the trajectory records."""
    return {
        "format": FORMAT_VERSION,
        "task_id": trajectory.task_id,
        "orchestrator": trajectory.orchestrator,
        "termination": str(trajectory.termination),
        "final_answer": trajectory.final_answer,
        "error": trajectory.error,
        "metadata": dict(trajectory.metadata),
        "messages": [_message(m) for m in trajectory.messages],
        "turns": [_turn(t) for t in trajectory.turns],
    }


def trajectory_from_dict(data: dict[str, Any]) -> Trajectory:
    """The trajectory `trajectory_to_dict` wrote; raises `ValueError` for another format or a broken record."""
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"trajectory format {data.get('format')!r} is not {FORMAT_VERSION}")
    try:
        return Trajectory(
            task_id=data["task_id"],
            messages=tuple(_message_from(m) for m in data["messages"]),
            turns=tuple(_turn_from(t) for t in data["turns"]),
            termination=Termination(data["termination"]),
            final_answer=data.get("final_answer"),
            error=data.get("error"),
            orchestrator=data.get("orchestrator", ""),
            metadata=dict(data.get("metadata") or {}),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"broken trajectory record: {type(exc).__name__}: {exc}") from None


def _usage(usage: Usage | None) -> list[int] | None:
    return None if usage is None else [usage.input_tokens, usage.output_tokens]


def _usage_from(data: list[int] | None) -> Usage | None:
    return None if data is None else Usage(int(data[0]), int(data[1]))


def _call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments, "error": call.error}


def _call_from(data: dict[str, Any]) -> ToolCall:
    return ToolCall(data["id"], data["name"], dict(data.get("arguments") or {}), data.get("error"))


def _message(message: Message) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": [_call(c) for c in message.tool_calls],
        "tool_call_id": message.tool_call_id,
        "name": message.name,
    }


def _message_from(data: dict[str, Any]) -> Message:
    return Message(
        role=data["role"],
        content=data["content"],
        tool_calls=tuple(_call_from(c) for c in data.get("tool_calls") or ()),
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
    )


def _ids(ids: tuple[int, ...] | tuple[float, ...] | None) -> list[Any] | None:
    return None if ids is None else list(ids)


def _completion(c: Completion) -> dict[str, Any]:
    return {
        "text": c.text,
        "tool_calls": [_call(x) for x in c.tool_calls],
        "usage": _usage(c.usage),
        "cost_usd": c.cost_usd,
        "latency_s": c.latency_s,
        "finish_reason": c.finish_reason,
        "model": c.model,
        "prompt_ids": _ids(c.prompt_ids),
        "completion_ids": _ids(c.completion_ids),
        "logprobs": _ids(c.logprobs),
    }


def _completion_from(data: dict[str, Any]) -> Completion:
    def ints(key: str) -> tuple[int, ...] | None:
        return None if data.get(key) is None else tuple(int(x) for x in data[key])

    return Completion(
        text=data["text"],
        tool_calls=tuple(_call_from(x) for x in data.get("tool_calls") or ()),
        usage=_usage_from(data.get("usage")) or Usage(),
        cost_usd=float(data.get("cost_usd", 0.0)),
        latency_s=float(data.get("latency_s", 0.0)),
        finish_reason=data.get("finish_reason", "stop"),
        model=data.get("model", ""),
        prompt_ids=ints("prompt_ids"),
        completion_ids=ints("completion_ids"),
        logprobs=None if data.get("logprobs") is None else tuple(float(x) for x in data["logprobs"]),
    )


def _observation(o: Observation) -> dict[str, Any]:
    return {
        "call_id": o.call_id,
        "name": o.name,
        "content": o.content,
        "status": o.status,
        "cost_usd": o.cost_usd,
        "latency_s": o.latency_s,
        "usage": _usage(o.usage),
        "terminal": o.terminal,
        "target": o.target,
    }


def _observation_from(data: dict[str, Any]) -> Observation:
    return Observation(
        call_id=data["call_id"],
        name=data["name"],
        content=data["content"],
        status=data.get("status", "ok"),
        cost_usd=float(data.get("cost_usd", 0.0)),
        latency_s=float(data.get("latency_s", 0.0)),
        usage=_usage_from(data.get("usage")),
        terminal=bool(data.get("terminal", False)),
        target=data.get("target"),
    )


def _turn(t: Turn) -> dict[str, Any]:
    return {
        "index": t.index,
        "completion": _completion(t.completion),
        "observations": [_observation(o) for o in t.observations],
        "latency_s": t.latency_s,
    }


def _turn_from(data: dict[str, Any]) -> Turn:
    return Turn(
        index=int(data["index"]),
        completion=_completion_from(data["completion"]),
        observations=tuple(_observation_from(o) for o in data.get("observations") or ()),
        latency_s=float(data.get("latency_s", 0.0)),
    )


def append_trajectory(path: str | Path, trajectory: Trajectory) -> None:
    """Append one trajectory as one JSONL line, secrets redacted, in a single write followed by fsync.

    A crash mid-write leaves at most a truncated last line, which `read_trajectories` skips.
    """
    from orchestra.redact import redact

    line = redact(json.dumps(trajectory_to_dict(trajectory), ensure_ascii=False)) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """Every complete line of a trajectories file (a truncated last line, from a crash, is skipped)."""
    out = []
    with Path(path).open() as handle:
        lines = handle.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 or all(not rest.strip() for rest in lines[i + 1:]):
                continue  # the torn last line of an interrupted append
            raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
        out.append(trajectory_from_dict(data))
    return out
