"""ToolSpec (what the orchestrator sees of a tool), CostCard (what it costs) and Tool (spec + callable).

A tool is an ordinary typed function wrapped once by `tool(fn, ...)`: the JSON schema comes from its annotations,
the description from its docstring, and the price and latency from the cost card, rendered into the description so the
orchestrator can trade accuracy against cost. No base class, no registration.

Cost of one call, in this order of precedence:
1. the function returns `ToolOutput(cost_usd=...)` (a recorded cost, e.g. RouterBench replay);
2. it returns `ToolOutput(usage=...)` (a model-tool): usage x token prices + per-call fee;
3. otherwise the card: per-call fee + seconds x $/s (e.g. the code sandbox).
`Tool.max_cost_usd(arguments)` is the worst-case estimate the budget reserves before the call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic

from orchestra.tools.schema import (
    arguments_model,
    compile_validator,
    docstring_summary_and_args,
    parameters_schema,
    schema_problems,
)
from orchestra.types import Message, Usage

ToolKind = Literal["basic", "specialist", "generalist"]


@dataclass(frozen=True, slots=True)
class CostCard:
    """Prices in US dollars and typical latency in seconds. Token prices are per million tokens."""

    input_usd_per_mtok: float = 0.0
    output_usd_per_mtok: float = 0.0
    usd_per_call: float = 0.0
    usd_per_second: float = 0.0
    latency_s: float = 0.0

    def tokens_usd(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input_usd_per_mtok + usage.output_tokens * self.output_usd_per_mtok
        ) / 1e6

    def call_usd(self, *, usage: Usage | None = None, seconds: float = 0.0) -> float:
        """Cost of one call that used `usage` tokens and ran `seconds`."""
        tokens = self.tokens_usd(usage) if usage is not None else 0.0
        return tokens + self.usd_per_call + self.usd_per_second * seconds

    def render(self) -> str:
        """A short price/latency note for the tool's description (empty for a free, instant tool)."""
        parts = []
        if self.input_usd_per_mtok or self.output_usd_per_mtok:
            parts.append(f"${self.input_usd_per_mtok:g}/M input tokens, ${self.output_usd_per_mtok:g}/M output tokens")
        if self.usd_per_call:
            parts.append(f"${self.usd_per_call:g} per call")
        if self.usd_per_second:
            parts.append(f"${self.usd_per_second:g} per second")
        if self.latency_s:
            parts.append(f"~{self.latency_s:g} s")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """The OpenAI function schema of a tool plus orchestra's metadata."""

    name: str
    description: str
    parameters: dict[str, Any]
    kind: ToolKind = "basic"
    cost: CostCard = CostCard()
    provider: str | None = None
    _validator: Any = field(default=None, init=False, repr=False, compare=False)
    """The compiled validator of `parameters`, built on first use and kept for the spec's lifetime."""

    def argument_problems(self, arguments: Any) -> list[str]:
        """Where `arguments` violates `parameters` (empty when valid), as `arguments.<path>: <rule>` lines.

        Raises `SchemaInvalid` when `parameters` itself is not a valid JSON Schema.
        """
        validator = self._validator
        if validator is None:
            validator = compile_validator(self.parameters)
            object.__setattr__(self, "_validator", validator)  # a cache, not state: equality ignores it
        return schema_problems(validator, arguments)

    def __getstate__(self) -> tuple[Any, ...]:
        # The compiled validator holds closures that cannot be pickled; a copy recompiles on first use.
        return (self.name, self.description, self.parameters, self.kind, self.cost, self.provider)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(("name", "description", "parameters", "kind", "cost", "provider"), state, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_validator", None)

    def rendered_description(self) -> str:
        note = self.cost.render()
        return f"{self.description} [cost: {note}]" if note else self.description

    def to_openai(self) -> dict[str, Any]:
        """The entry for OpenAI's `tools=` list (description includes price and latency)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.rendered_description(),
                "parameters": self.parameters,
            },
        }

    @classmethod
    def from_openai(cls, entry: dict[str, Any], **metadata: Any) -> ToolSpec:
        fn = entry.get("function", entry)
        return cls(
            name=fn["name"],
            description=fn.get("description", ""),
            parameters=fn.get("parameters") or {"type": "object", "properties": {}},
            **metadata,
        )


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool function may return instead of a plain value, to state its cost or end the episode."""

    content: Any
    cost_usd: float | None = None
    usage: Usage | None = None
    terminal: bool = False
    is_error: bool = False
    target: str | None = None


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Passed to tool functions that declare a parameter annotated `ToolContext`."""

    task_id: str
    call_id: str
    """Unique per call: side-effecting tools use it as an idempotency key, so a retried call applies once."""
    prompt: str = ""
    """The task's prompt as given (not as the prompt builder wrapped it); empty outside an episode."""
    history: tuple[Message, ...] = ()
    """The conversation so far (what the orchestrator was sent, its replies, earlier tool results): tools that
    consult a model on the episode's context (the paper's `search`, `enhance_reasoning`, `answer`) read it."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A spec plus the function that runs it. Build with `tool(fn, ...)` or `Tool.from_schema(...)`."""

    spec: ToolSpec
    fn: Callable[..., Any | Awaitable[Any]]
    validate: Callable[[dict[str, Any]], dict[str, Any]]
    """Returns the arguments to pass (defaults filled, types coerced) or raises ValueError naming the problem."""
    timeout_s: float = 60.0
    max_cost: Callable[[dict[str, Any]], float] | None = None
    context_param: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def max_cost_usd(self, arguments: dict[str, Any]) -> float:
        """Worst-case cost of calling with `arguments`: what the budget reserves before the call."""
        if self.max_cost is not None:
            return self.max_cost(arguments)
        card = self.spec.cost
        return card.usd_per_call + card.usd_per_second * self.timeout_s

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        kwargs = dict(arguments)
        if self.context_param:
            kwargs[self.context_param] = context
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        return await asyncio.to_thread(self.fn, **kwargs)

    @classmethod
    def from_schema(
        cls, spec: ToolSpec, fn: Callable[..., Any], *, timeout_s: float = 60.0, **kwargs: Any
    ) -> Tool:
        """A tool known by its JSON schema only (MCP, OpenAI `tools=`); `fn` receives the arguments as keywords."""

        def validate(arguments: dict[str, Any]) -> dict[str, Any]:
            problems = spec.argument_problems(arguments)
            if problems:
                raise ValueError("; ".join(problems))
            return arguments

        return cls(spec=spec, fn=fn, validate=validate, timeout_s=timeout_s, **kwargs)


def tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    kind: ToolKind = "basic",
    cost: CostCard = CostCard(),
    provider: str | None = None,
    timeout_s: float = 60.0,
    max_cost: Callable[[dict[str, Any]], float] | None = None,
) -> Tool:
    """Wrap a typed function as a tool: schema from its annotations, description from its docstring."""
    context_param = next(
        (
            p
            for p, hint in inspect.get_annotations(fn, eval_str=True).items()
            if hint is ToolContext and p != "return"
        ),
        None,
    )
    model = arguments_model(fn, skip=frozenset({context_param} if context_param else ()))
    summary, _ = docstring_summary_and_args(fn)
    spec = ToolSpec(
        name=name or fn.__name__,
        description=description if description is not None else summary,
        parameters=parameters_schema(model),
        kind=kind,
        cost=cost,
        provider=provider,
    )

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            ]
            raise ValueError("; ".join(problems)) from None
        return {k: getattr(parsed, k) for k in type(parsed).model_fields}

    return Tool(
        spec=spec,
        fn=fn,
        validate=validate,
        timeout_s=timeout_s,
        max_cost=max_cost,
        context_param=context_param,
    )
