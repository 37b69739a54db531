"""Trajectories as OpenAI chat completion bodies and stream chunks, with orchestra's accounting in `usage`.

`usage` keeps OpenAI's token counts (the orchestrator's own tokens, summed over turns) and adds `cost_usd` (the whole
episode: orchestrator plus every tool and model call), `orchestrator_cost_usd`, `latency_s`, `turns` and `tools`
(per tool, or per model for model-as-argument tools: calls, cost, latency). The top-level `orchestra` field says why
the episode stopped. The `openai` client keeps unknown fields, so `response.usage.cost_usd` just works.

Finish reasons: `stop` for an answer, `tool_calls` when the orchestrator called one of the client's tools, `length`
when a turn cap or budget stopped it first.
"""

from __future__ import annotations

import json
import time
from typing import Any

from orchestra.types import Termination, Trajectory, Usage


def usage_body(trajectory: Trajectory) -> dict[str, Any]:
    tokens = sum((t.completion.usage for t in trajectory.turns), Usage())
    tools: dict[str, dict[str, float | int]] = {}
    for o in trajectory.observations:
        entry = tools.setdefault(o.target or o.name, {"calls": 0, "errors": 0, "cost_usd": 0.0, "latency_s": 0.0})
        entry["calls"] += 1
        entry["errors"] += int(o.is_error)
        entry["cost_usd"] += o.cost_usd
        entry["latency_s"] += o.latency_s
    return {
        "prompt_tokens": tokens.input_tokens,
        "completion_tokens": tokens.output_tokens,
        "total_tokens": tokens.input_tokens + tokens.output_tokens,
        "cost_usd": trajectory.cost_usd,
        "orchestrator_cost_usd": trajectory.orchestrator_cost_usd,
        "latency_s": trajectory.latency_s,
        "turns": len(trajectory.turns),
        "tools": tools,
    }


def client_calls(trajectory: Trajectory, client_tools: frozenset[str]) -> list[dict[str, Any]]:
    """The last turn's calls to the client's own tools, in OpenAI's shape (empty when there are none)."""
    if not client_tools or not trajectory.turns:
        return []
    last = trajectory.turns[-1]
    ran = {o.call_id for o in last.observations if o.name in client_tools and o.status == "ok"}
    return [c.to_openai() for c in last.completion.tool_calls if c.id in ran]


def answer_of(trajectory: Trajectory, calls: list[dict[str, Any]]) -> tuple[str, str]:
    """(content, finish reason)."""
    if calls:
        return trajectory.turns[-1].completion.text, "tool_calls"
    if trajectory.termination in (Termination.ANSWERED, Termination.FINAL_MESSAGE):
        return trajectory.final_answer or "", "stop"
    return trajectory.final_answer or "", "length"


def summary(trajectory: Trajectory) -> dict[str, Any]:
    return {"termination": str(trajectory.termination), "error": trajectory.error,
            "trajectory_id": trajectory.task_id}


def completion_body(trajectory: Trajectory, model: str, client_tools: frozenset[str]) -> dict[str, Any]:
    calls = client_calls(trajectory, client_tools)
    content, finish = answer_of(trajectory, calls)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": trajectory.task_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage_body(trajectory),
        "orchestra": summary(trajectory),
    }


def chunk(job_id: str, model: str, delta: dict[str, Any], finish: str | None = None,
          **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": job_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    body.update(extra)
    return sse(body)


def final_chunks(trajectory: Trajectory, model: str, client_tools: frozenset[str], include_usage: bool,
                 pieces: int = 4) -> list[bytes]:
    """The answer (in a few content deltas), any client tool calls, the finish chunk, then usage when asked."""
    calls = client_calls(trajectory, client_tools)
    content, finish = answer_of(trajectory, calls)
    job_id = trajectory.task_id
    step = max(1, -(-len(content) // pieces))
    out = [chunk(job_id, model, {"content": content[i:i + step]}) for i in range(0, len(content), step)]
    if calls:
        out.append(chunk(job_id, model, {"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]}))
    out.append(chunk(job_id, model, {}, finish, orchestra=summary(trajectory)))
    if include_usage:
        out.append(sse({"id": job_id, "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model, "choices": [], "usage": usage_body(trajectory)}))
    return out


def sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
