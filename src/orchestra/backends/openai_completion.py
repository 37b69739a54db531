"""A wire `Reply` of an OpenAI-compatible endpoint -> the `Completion` the episode loop sees.

Pure: no I/O, no retries (those stay in `openai_compat`). `openai_compat` imports this module, never the reverse.

Invariants
- The API key never reaches the `Completion`: text and raw tool calls pass through `openai_wire.scrub` first.
- Every structured call has an id: servers that omit ids would give every turn's first call the same one, so a
  missing id gets a fresh random one.
- Text is read for tool calls (hermes blocks, fenced JSON: `orchestra.toolcalls`) only when the server returned no
  structured calls AND the request offered tools. With no tools offered the reply is text: a plain answer holding a
  fenced JSON block with a "name" key (a synthesis model's JSON answer) is the answer, never a call.
- A reply cut at `max_response_chars` ends with a visible truncation line and finish reason `length`.
- A server that reports no usage is billed an upper-leaning estimate (`estimate_usage`), so money is never hidden by
  a quiet server; cost is `price.cost_usd(usage)`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from orchestra.backends.base import Sampling, prompt_token_bound
from orchestra.backends.openai_wire import Reply, scrub, scrub_call
from orchestra.backends.pricing import ModelPrice
from orchestra.toolcalls import parse_openai_tool_calls, parse_tool_calls
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message, Usage

log = logging.getLogger(__name__)


def to_completion(reply: Reply, *, key: str | None, model: str, price: ModelPrice, messages: Sequence[Message],
                  tools: Sequence[ToolSpec], sampling: Sampling, max_response_chars: int,
                  latency_s: float) -> Completion:
    """The `Completion` of `reply` to a request of `messages` offering `tools`; `model` is the priced name."""
    text = scrub(reply.text, key)
    raw_calls = [scrub_call(c, key) for c in reply.raw_tool_calls]
    for call in raw_calls:
        call.setdefault("id", None)
        call["id"] = call["id"] or f"call_{secrets.token_hex(6)}"
    calls = parse_openai_tool_calls(raw_calls)
    if not calls and tools:  # with no tools offered, a fenced JSON answer is the answer, not a call
        text, calls = parse_tool_calls(text, id_prefix=f"call_{secrets.token_hex(6)}_")
    if reply.cut:
        text = text[:max_response_chars] + f"\n[truncated at {max_response_chars} characters]"
    usage = reply.usage
    if usage is None:
        usage = estimate_usage(messages, tools, reply.text, sampling)
        log.warning("%s: the server reported no usage; billing an estimate %s", model, usage)
    return Completion(
        text=text,
        tool_calls=tuple(calls),
        usage=usage,
        cost_usd=price.cost_usd(usage),
        latency_s=latency_s,
        finish_reason="length" if reply.cut else reply.finish_reason,
        model=model,
    )


def estimate_usage(messages: Sequence[Message], tools: Sequence[ToolSpec], text: str, sampling: Sampling) -> Usage:
    """Upper-leaning usage when the server reported none: the prompt bound, output UTF-8 bytes up to max_tokens."""
    return Usage(prompt_token_bound(messages, tools), min(sampling.max_tokens, len(text.encode("utf-8", "replace"))))
