"""One chat request as one episode: what the server runs, built from the pool and the request.

`prepare` turns a validated `ChatRequest` into an `EpisodeJob` (task, toolbox, preferences, limits, the caller's
budget) or raises `RequestError` naming the bad input; `run_job` runs it through `run_episode`, the same loop as
every other face of orchestra.

Decisions
- The conversation becomes the task: a single user message is the prompt as is; a longer conversation is written out
  as a transcript the orchestrator continues. System (and developer) messages become the task's system text.
- The request may narrow the pool's limits, never widen them: its budget and turn cap are min'ed with the pool's.
- Tools the client sends (`tools=`) are offered to the orchestrator beside the pool's. Calling one ends the server's
  episode and the call goes back to the client as `tool_calls` (the client runs it and sends the result in its next
  request, as with any OpenAI model). A client tool named like a pool tool is refused.
- Steps (each orchestrator completion and each tool result) are reported to `emit` as they happen, for streams that
  ask for them, by thin wrappers around the backend and the tools; nothing in the episode loop knows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.preferences import Limits, Preferences
from orchestra.rollout.budget import Budget
from orchestra.rollout.episode import ObservationRenderer, PromptBuilder, run_episode
from orchestra.rollout.guard import wrap_untrusted
from orchestra.rollout.prompt import default_prompt
from orchestra.serve.auth import Account
from orchestra.serve.schema import ChatRequest, RequestError, to_messages
from orchestra.task import Task
from orchestra.tools.spec import Tool, ToolContext, ToolOutput, ToolSpec
from orchestra.tools.toolbox import Toolbox, render_content
from orchestra.types import Completion, Message, Trajectory

Emit = Callable[[dict[str, Any]], None]
STEP_TEXT_CHARS = 2_000
"""Tool results in streamed steps are cut to this many characters (the trajectory keeps them whole)."""


@dataclass(frozen=True)
class ServedPool:
    """What the server runs every episode with (built once at start)."""

    orchestrator: ChatBackend
    tools: tuple[Tool, ...]
    preferences: Preferences | None
    limits: Limits
    sampling: Sampling
    build_prompt: PromptBuilder = default_prompt
    render_observation: ObservationRenderer = wrap_untrusted

    @property
    def model_ids(self) -> tuple[str, ...]:
        """The names clients may ask for: the orchestrator's model name, and `orchestra`."""
        return tuple(dict.fromkeys((self.orchestrator.model, "orchestra")))


@dataclass(frozen=True)
class EpisodeJob:
    id: str
    task: Task
    toolbox: Toolbox
    preferences: Preferences | None
    limits: Limits
    sampling: Sampling
    account: Account
    client_tools: frozenset[str]
    stream_steps: bool


def prepare(request: ChatRequest, served: ServedPool, account: Account, job_id: str) -> EpisodeJob:
    """The episode `request` asks for, or `RequestError`."""
    if request.model not in served.model_ids:
        raise RequestError(404, f"The model {request.model!r} does not exist; this server serves "
                                f"{', '.join(served.model_ids)}.", code="model_not_found", param="model")
    messages = to_messages(request.messages)
    if not any(m.role == "user" for m in messages):
        raise RequestError(400, "messages: at least one user message is needed.", param="messages")
    options = request.orchestra
    client = _client_tools(request.tools or [], {t.name for t in served.tools})
    toolbox = Toolbox.of([*served.tools, *client])
    unknown = sorted(set(options.banned_tools) - set(toolbox.tools))
    if unknown:
        raise RequestError(400, f"orchestra.banned_tools: unknown tools {', '.join(unknown)}.",
                           param="orchestra.banned_tools")
    pool = served.limits
    limits = replace(
        pool,
        max_turns=min(pool.max_turns, options.max_turns or pool.max_turns),
        budget_usd=_min_optional(pool.budget_usd, options.budget_usd),
        banned_tools=pool.banned_tools | frozenset(options.banned_tools),
    )
    preferences = served.preferences
    if options.preferences is not None:
        p = options.preferences
        preferences = Preferences(dict(p.tool_weights), p.outcome, p.cost, p.latency, p.instruction)
    sampling = served.sampling
    if request.temperature is not None:
        sampling = replace(sampling, temperature=request.temperature)
    system, prompt = task_text(messages)
    return EpisodeJob(job_id, Task(job_id, prompt, system=system), toolbox, preferences, limits, sampling, account,
                      frozenset(t.name for t in client), options.stream_steps)


async def run_job(job: EpisodeJob, served: ServedPool, emit: Emit | None = None) -> Trajectory:
    """Run the job's episode against the caller's budget; `emit` receives the steps as they happen."""
    orchestrator: ChatBackend = served.orchestrator
    toolbox = job.toolbox
    if emit is not None:
        orchestrator = _ObservedBackend(orchestrator, emit)
        toolbox = Toolbox.of([_observed_tool(t, emit) for t in toolbox.tools.values()],
                             max_observation_chars=toolbox.max_observation_chars)
    budget: Budget = job.account.budget
    return await run_episode(
        job.task, orchestrator, toolbox, preferences=job.preferences, limits=job.limits, budget=budget,
        sampling=job.sampling, build_prompt=served.build_prompt, render_observation=served.render_observation,
    )


def task_text(messages: Sequence[Message]) -> tuple[str, str]:
    """(system text, prompt) for a conversation."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    rest = [m for m in messages if m.role != "system"]
    if len(rest) == 1:
        return system, rest[0].content
    lines = []
    for m in rest:
        if m.role == "tool":
            lines.append(f"tool result ({m.name or 'call'} {m.tool_call_id or ''}): {m.content}")
            continue
        if m.content:
            lines.append(f"{m.role}: {m.content}")
        for c in m.tool_calls:
            lines.append(f"{m.role} called {c.name}({json.dumps(c.arguments)}) [id {c.id}]")
    return system, ("The conversation so far:\n" + "\n".join(lines)
                    + "\n\nContinue it: answer the user's last request.")


def _client_tools(entries: list[dict[str, Any]], pool_names: set[str]) -> list[Tool]:
    tools = []
    for i, entry in enumerate(entries):
        try:
            spec = ToolSpec.from_openai(entry, kind="basic")
        except (KeyError, TypeError, AttributeError):
            raise RequestError(400, f"tools.{i}: expected {{'type': 'function', 'function': {{'name': ...}}}}.",
                               param=f"tools.{i}") from None
        if spec.name in pool_names:
            raise RequestError(400, f"tools.{i}: {spec.name!r} is the name of one of the server's tools.",
                               param=f"tools.{i}")
        tools.append(Tool.from_schema(spec, _returned_to_client))
    return tools


async def _returned_to_client(**arguments: Any) -> ToolOutput:
    """A client tool's call ends the episode; the client runs it."""
    return ToolOutput("(this call is returned to the client, which runs it)", terminal=True)


def _min_optional(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class _ObservedBackend:
    """The orchestrator, reporting each completion to `emit`."""

    def __init__(self, inner: ChatBackend, emit: Emit):
        self._inner = inner
        self._emit = emit
        self._turn = 0
        self.price = getattr(inner, "price", None)

    @property
    def model(self) -> str:
        return self._inner.model

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        return self._inner.max_cost_usd(messages, tools, sampling)

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> Completion:
        completion = await self._inner.complete(messages, tools, sampling)
        self._emit({"type": "orchestrator", "turn": self._turn, "text": completion.text,
                    "tool_calls": [c.to_openai() for c in completion.tool_calls if c.error is None],
                    "cost_usd": completion.cost_usd, "latency_s": completion.latency_s})
        self._turn += 1
        return completion


def _observed_tool(inner: Tool, emit: Emit) -> Tool:
    """`inner`, reporting each result (or failure) to `emit`."""

    async def call(**kwargs: Any) -> Any:
        context: ToolContext = kwargs.pop("_orchestra_context")
        started = time.perf_counter()
        try:
            result = await inner.invoke(kwargs, context)
        except Exception as exc:
            emit(_tool_step(inner.name, context.call_id, f"error: {type(exc).__name__}: {exc}", "tool_error",
                            started))
            raise
        content = result.content if isinstance(result, ToolOutput) else result
        emit(_tool_step(inner.name, context.call_id, render_content(content), "ok", started))
        return result

    return replace(inner, fn=call, context_param="_orchestra_context")


def _tool_step(name: str, call_id: str, content: str, status: str, started: float) -> dict[str, Any]:
    return {"type": "tool_result", "name": name, "call_id": call_id, "status": status,
            "content": content[:STEP_TEXT_CHARS], "latency_s": time.perf_counter() - started}
