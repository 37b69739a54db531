"""ChatBackend: the one interface to every model, remote or local, orchestrator or expert.

`complete(messages, tools, sampling)` returns a `Completion`: text, parsed tool calls, usage, its cost in dollars
(computed by the backend from its price), its latency, and, for a local model, the exact token ids it read and
sampled. Backends: `openai_compat` (any OpenAI-compatible HTTP endpoint), `local` (transformers), `replay`
(recorded responses and costs), `scripted` (a deterministic double for tests and examples).

A backend raises `BackendError` only for infrastructure failures it could not retry away; anything the model wrote,
however broken, comes back as a `Completion` (broken tool calls carry `ToolCall.error`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling settings for one completion."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that can answer a conversation, optionally with tool calls."""

    @property
    def model(self) -> str:
        """The model's name, as priced in the price table."""
        ...

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        """Worst-case cost of `complete` with these arguments: what a budget reserves before the call."""
        ...

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling
    ) -> Completion:
        ...


def estimate_prompt_tokens(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> int:
    """An upper-leaning token estimate for remote prompts: one token per 3 characters plus per-message overhead.

    Used only for budget reservations, where over-estimating is safe and under-estimating is not; real tokenizers
    average about 4 characters per token on English and JSON.
    """
    chars = sum(len(m.content) + sum(len(str(c.arguments)) + len(c.name) for c in m.tool_calls) for m in messages)
    chars += sum(len(t.rendered_description()) + len(str(t.parameters)) + len(t.name) for t in tools)
    return chars // 3 + 8 * len(messages) + 16


def worst_case_cost_usd(price: object, messages: Sequence[Message], tools: Sequence[ToolSpec],
                        sampling: Sampling) -> float:
    """`price` (a `ModelPrice`) of the estimated prompt plus `sampling.max_tokens` of output."""
    from orchestra.types import Usage

    return price.cost_usd(Usage(estimate_prompt_tokens(messages, tools), sampling.max_tokens))  # type: ignore[attr-defined]
