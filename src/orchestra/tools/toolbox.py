"""Toolbox: the tools one episode may call; validates, dispatches, times and prices calls, and never raises.

Every way a call can go wrong becomes an `Observation` the orchestrator can read and act on:
- the call could not be parsed (`ToolCall.error`) or names an unknown tool -> `format_error`, nothing runs;
- its arguments fail the tool's JSON-Schema `parameters` (checked by a compiled `jsonschema` validator, cached on the
  spec), or the typed function's own validation -> one `format_error` naming each path and rule, nothing runs;
- the tool's own `parameters` is not a valid JSON Schema -> `tool_error`, nothing runs;
- the tool is banned for this run or outside the task's allow-list -> `denied`, nothing runs;
- the tool raises or exceeds its timeout -> `tool_error` with the exception's message; a timed-out call is charged
  its worst case (`Tool.max_cost_usd`), since what an abandoned paid call was billed is unknown.
Output is capped at `max_observation_chars` before it can enter the context (a 10 MB response costs no memory
downstream). Budget reservation is the episode's job (`orchestra.rollout.budget`); the toolbox only prices calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.tools.schema import SchemaInvalid
from orchestra.tools.spec import Tool, ToolContext, ToolOutput, ToolSpec
from orchestra.types import Message, Observation, ToolCall

DEFAULT_MAX_OBSERVATION_CHARS = 20_000


@dataclass(frozen=True)
class Toolbox:
    """An immutable set of tools by name, with the names this run refuses (`denied`)."""

    tools: dict[str, Tool] = field(default_factory=dict)
    denied: frozenset[str] = frozenset()
    max_observation_chars: int = DEFAULT_MAX_OBSERVATION_CHARS

    @classmethod
    def of(cls, tools: Iterable[Tool], **kwargs: Any) -> Toolbox:
        by_name: dict[str, Tool] = {}
        for t in tools:
            if t.name in by_name:
                raise ValueError(f"two tools are named {t.name!r}")
            by_name[t.name] = t
        return cls(tools=by_name, **kwargs)

    def specs(self) -> list[ToolSpec]:
        """The specs the orchestrator is shown: every tool not denied."""
        return [t.spec for name, t in self.tools.items() if name not in self.denied]

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def merged(self, other: Iterable[Tool]) -> Toolbox:
        return Toolbox.of([*self.tools.values(), *other], denied=self.denied,
                          max_observation_chars=self.max_observation_chars)

    def restricted(
        self,
        *,
        allow: Iterable[str] | None = None,
        banned_tools: Iterable[str] = (),
        banned_providers: Iterable[str] = (),
    ) -> Toolbox:
        """A toolbox denying tools outside `allow` (when given), banned by name, or from a banned provider."""
        denied = set(self.denied) | set(banned_tools)
        providers = set(banned_providers)
        for name, t in self.tools.items():
            if (allow is not None and name not in set(allow)) or (t.spec.provider in providers and providers):
                denied.add(name)
        return Toolbox(tools=self.tools, denied=frozenset(denied), max_observation_chars=self.max_observation_chars)

    def check(self, call: ToolCall) -> tuple[Tool, dict[str, Any]] | Observation:
        """The tool and validated arguments for `call`, or the error observation that refuses it (nothing ran)."""
        if call.error is not None:
            return _refuse(call, "format_error", f"malformed tool call: {call.error}")
        t = self.tools.get(call.name)
        if t is None:
            known = ", ".join(sorted(n for n in self.tools if n not in self.denied))
            return _refuse(call, "format_error", f"unknown tool {call.name!r}; available tools: {known}")
        if call.name in self.denied:
            return _refuse(call, "denied", f"tool {call.name!r} is not allowed in this run")
        try:
            problems = t.spec.argument_problems(call.arguments)
        except SchemaInvalid as exc:
            return _refuse(call, "tool_error", f"tool {call.name!r} has an invalid parameters schema: {exc}")
        if problems:
            return _refuse(call, "format_error", f"invalid arguments for {call.name}: {'; '.join(problems)}")
        try:
            return t, t.validate(call.arguments)
        except ValueError as exc:
            return _refuse(call, "format_error", f"invalid arguments for {call.name}: {exc}")

    async def call(self, call: ToolCall, *, task_id: str = "") -> Observation:
        checked = self.check(call)
        if isinstance(checked, Observation):
            return checked
        t, arguments = checked
        return await self.run_checked(call, t, arguments, task_id=task_id)

    async def run_checked(self, call: ToolCall, t: Tool, arguments: dict[str, Any], *, task_id: str = "",
                          prompt: str = "", history: Sequence[Message] = ()) -> Observation:
        """Run an already-checked call: time it, price it, cap its output; failures become `tool_error`.
        `prompt` and `history` (the task and the conversation so far) reach tools through `ToolContext`."""
        started = time.perf_counter()
        context = ToolContext(task_id, call.id, prompt, tuple(history))
        try:
            result = await asyncio.wait_for(t.invoke(arguments, context), t.timeout_s)
        except TimeoutError:
            # What an abandoned paid call was billed is unknown: charge its worst case, never $0 (F14).
            elapsed = time.perf_counter() - started
            cost = max(t.spec.cost.call_usd(seconds=elapsed), t.max_cost_usd(arguments))
            return Observation(call.id, t.name, f"error: {t.name} timed out after {t.timeout_s:g} s",
                               status="tool_error", cost_usd=cost, latency_s=elapsed)
        except Exception as exc:  # noqa: BLE001 - any tool failure is the model's information, not our crash
            elapsed = time.perf_counter() - started
            return Observation(call.id, t.name, f"error: {type(exc).__name__}: {exc}", status="tool_error",
                               cost_usd=t.spec.cost.call_usd(seconds=elapsed), latency_s=elapsed)
        elapsed = time.perf_counter() - started
        out = result if isinstance(result, ToolOutput) else ToolOutput(content=result)
        if out.cost_usd is not None:
            cost = out.cost_usd
        else:
            cost = t.spec.cost.call_usd(usage=out.usage, seconds=elapsed)
        return Observation(
            call_id=call.id,
            name=t.name,
            content=cap_text(render_content(out.content), self.max_observation_chars),
            status="tool_error" if out.is_error else "ok",
            cost_usd=cost,
            latency_s=elapsed,
            usage=out.usage,
            terminal=out.terminal,
            target=out.target,
        )

    async def call_many(self, calls: Sequence[ToolCall], *, task_id: str = "") -> list[Observation]:
        """Run calls concurrently; observations come back in call order."""
        return list(await asyncio.gather(*(self.call(c, task_id=task_id) for c in calls)))


def render_content(content: Any) -> str:
    """A tool's return value as text for the model: strings as they are, anything else as JSON."""
    if isinstance(content, str):
        return content
    if hasattr(content, "model_dump"):
        content = content.model_dump(mode="json")
    try:
        return json.dumps(content, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(content)


def cap_text(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[truncated: {len(text) - max_chars} more characters]"


def _refuse(call: ToolCall, status: str, message: str) -> Observation:
    return Observation(call_id=call.id, name=call.name, content=message, status=status)  # type: ignore[arg-type]
