"""Encoding demonstrations for SFT: token ids exactly as the policy sees them, with the loss mask.

`encode_conversation` reproduces exactly what `LocalBackend` feeds the model at inference: the rendered prompt, then
per assistant turn the reply's tokens plus the end-of-turn token (trained on), then the template's continuation with
the tool results (not trained on). The loss mask is 1 only on tokens the model is to write. What is encoded is any
trajectory's messages, whichever environment or demonstration source produced it.

Decision weights: of the tokens a reply holds, those of a tool call's name and argument values decide what the call
does; the JSON around them is format, learned in a few steps. `decision_weight` > 1 gives the deciding tokens that
weight in the loss (each written token otherwise weighs 1), so a step's gradient is not spent mostly on tokens the
model already predicts (one escalation decision is one token among about seventy on RouterBench).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.backends.chat_format import assistant_text
from orchestra.toolcalls import Dialect, render_call
from orchestra.tools.spec import ToolSpec
from orchestra.types import Message


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of one conversation and the loss mask (1 = written by the model, trained on); `weights`, when set,
    are each token's loss weight (0 where the mask is 0)."""

    ids: tuple[int, ...]
    mask: tuple[int, ...]
    weights: tuple[float, ...] | None = None


def encode_conversation(backend: object, messages: Sequence[Message], tools: Sequence[ToolSpec],
                        decision_weight: float = 1.0) -> Encoded:
    """The ids `LocalBackend` would hold after this conversation, with assistant tokens masked in (and, with
    `decision_weight` != 1, the deciding tokens of tool calls weighted so).

    `backend` is a `LocalBackend` (typed loosely so this module imports no torch).
    """
    fmt = backend.chat_format  # type: ignore[attr-defined]
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    end_id = _end_of_turn_id(backend)
    end_text = tokenizer.decode([end_id], skip_special_tokens=False)
    first = next(i for i, m in enumerate(messages) if m.role == "assistant")
    ids = list(_encode(tokenizer, fmt.render(messages[:first], tools, add_generation_prompt=True)))
    mask = [0] * len(ids)
    weights: list[float] = [0.0] * len(ids)
    assistant_indices = [i for i, m in enumerate(messages) if m.role == "assistant"]
    for n, i in enumerate(assistant_indices):
        text = assistant_text(messages[i], fmt.calls)
        reply = _encode(tokenizer, text)
        weights += _reply_weights(tokenizer, text, reply, messages[i], decision_weight, fmt.calls) + [1.0]
        reply += [end_id]
        ids += reply
        mask += [1] * len(reply)
        following = assistant_indices[n + 1] if n + 1 < len(assistant_indices) else None
        if following is None:
            break
        closing, delta = fmt.continuation(messages[: i + 1], messages[i + 1 : following], tools)
        rest = _encode(tokenizer, closing.removeprefix(end_text) + delta)
        ids += rest
        mask += [0] * len(rest)
        weights += [0.0] * len(rest)
    return Encoded(tuple(ids), tuple(mask), tuple(weights) if decision_weight != 1.0 else None)


def decision_spans(message: Message, calls: Dialect = "hermes") -> list[tuple[int, int]]:
    """Character spans, in the reply text SFT trains on (`assistant_text`), of each tool call's name and argument
    values: the text is rebuilt piece by piece the way `render_call` lays it out, so the spans are exact."""
    spans: list[tuple[int, int]] = []
    position = len(message.content) + 1 if message.content else 0
    for call in (c for c in message.tool_calls if c.error is None):
        block = render_call(call.name, call.arguments, calls)
        if calls == "compact":  # name(key=value, key=value)
            spans.append((position, position + len(call.name)))
            cursor = position + len(call.name) + 1
            for j, (key, value) in enumerate(call.arguments.items()):
                cursor += (2 if j else 0) + len(key) + 1
                rendered = render_call("x", {key: value}, calls)[len(key) + 3:-1]
                spans.append((cursor, cursor + len(rendered)))
                cursor += len(rendered)
            position += len(block) + 1
            continue
        cursor = position + len('<tool_call>\n{"name": ')
        name = json.dumps(call.name, ensure_ascii=False)
        spans.append((cursor, cursor + len(name)))
        cursor += len(name) + len(', "arguments": {')
        for j, (key, value) in enumerate(call.arguments.items()):
            cursor += (2 if j else 0) + len(json.dumps(key, ensure_ascii=False)) + 2
            rendered = json.dumps(value, ensure_ascii=False)
            spans.append((cursor, cursor + len(rendered)))
            cursor += len(rendered)
        position += len(block) + 1
    return spans


def _reply_weights(tokenizer: object, text: str, reply: list[int], message: Message, weight: float,
                   calls: Dialect = "hermes") -> list[float]:
    if weight == 1.0 or not message.tool_calls:
        return [1.0] * len(reply)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    if list(encoded["input_ids"]) != reply:
        from orchestra.errors import ConfigError

        raise ConfigError("decision_weight: this tokenizer's offsets do not match its encoding; leave it at 1")
    spans = decision_spans(message, calls)
    return [weight if any(a < end and start < b for a, b in spans) else 1.0 for start, end in encoded["offset_mapping"]]


def _encode(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]


def _end_of_turn_id(backend: object) -> int:
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id in backend.end_ids:  # type: ignore[attr-defined]
            return token_id
    return min(backend.end_ids)  # type: ignore[attr-defined]
