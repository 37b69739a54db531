"""ChatBackend: the one interface to every model, remote or local, orchestrator or expert.

`complete(messages, tools, sampling)` returns a `Completion`: text, parsed tool calls, usage, its cost in dollars
(computed by the backend from its price), its latency, and, for a local model, the exact token ids it read and
sampled. Backends: `openai_compat` (any OpenAI-compatible HTTP endpoint), `local` (transformers), `replay`
(recorded responses and costs), `scripted` (a deterministic double for tests and examples).

A backend raises `BackendError` only for infrastructure failures it could not retry away; anything the model wrote,
however broken, comes back as a `Completion` (broken tool calls carry `ToolCall.error`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from orchestra.errors import BackendError
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


# Template overhead the prompt bound allows on top of the request's own bytes: role markers, separators and
# special tokens around each message (ChatML and Llama 3 use ~5 tokens), and a fixed preamble (a default system
# prompt, a tools section's instructions: ~100-300 tokens in the templates we know). Generous on purpose.
TEMPLATE_TOKENS_PER_MESSAGE = 32
TEMPLATE_TOKENS_FIXED = 512


def prompt_token_bound(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> int:
    """An upper bound on the prompt tokens any provider counts for this request (RELIABILITY F13).

    Assumption: every token covers at least one UTF-8 byte of the rendered prompt (true of byte-level BPE, of
    SentencePiece with byte fallback, and of character vocabularies), so a prompt has at most as many tokens as bytes.
    Every field counts as its most expansive rendering: as a JSON string, ASCII-escaped with HTML-safe escapes of
    `<>&'` (templates may pass any field, tool results included, through `tojson`; the escaped form is never shorter
    than the UTF-8 bytes), structures indented by 4; plus
    `TEMPLATE_TOKENS_PER_MESSAGE` per message and `TEMPLATE_TOKENS_FIXED`. Used for budget reservations, where an
    over-estimate only holds money back and an under-estimate could pass the cap.
    """
    total = TEMPLATE_TOKENS_FIXED + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    for m in messages:
        total += _json_bound(m.content) + _json_bound(m.role) + _json_bound(m.name or "")
        total += _json_bound(m.tool_call_id or "")
        for call in m.tool_calls:
            total += TEMPLATE_TOKENS_PER_MESSAGE + _json_bound(call.id) + _json_bound(call.name)
            total += _json_bound(call.arguments)
    if tools:
        total += _json_bound([t.to_openai() for t in tools])
    return total


estimate_prompt_tokens = prompt_token_bound  # the name older callers import


def worst_case_cost_usd(price: object, messages: Sequence[Message], tools: Sequence[ToolSpec],
                        sampling: Sampling) -> float:
    """`price` (a `ModelPrice`) of the prompt bound plus `sampling.max_tokens` of output: what a budget reserves."""
    from orchestra.types import Usage

    usage = Usage(prompt_token_bound(messages, tools), sampling.max_tokens)
    return price.cost_usd(usage)  # type: ignore[attr-defined]


def billed_cost_usd(backend: object, exc: BackendError) -> float:
    """What a failed call was still billed (the tokens of a cut stream or a lost body), priced by `backend.price`."""
    price = getattr(backend, "price", None)
    if exc.billed_usage is None or price is None:
        return 0.0
    return float(price.cost_usd(exc.billed_usage))


def _json_bound(value: object) -> int:
    """Bytes of the most expansive JSON rendering a template might use for `value`."""
    text = json.dumps(value, ensure_ascii=True, indent=4, default=str)
    return len(text) + 5 * sum(text.count(c) for c in "<>&'")  # `<` -> `\u003c` in HTML-safe dumps
