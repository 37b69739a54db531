"""Encoding demonstrations for SFT: token ids exactly as the policy sees them, with the loss mask.

`encode_conversation` reproduces exactly what `LocalBackend` feeds the model at inference: the rendered prompt, then
per assistant turn the reply's tokens plus the end-of-turn token (trained on), then the template's continuation with
the tool results (not trained on). The loss mask is 1 only on tokens the model is to write. What is encoded is any
trajectory's messages, whichever environment or demonstration source produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.backends.chat_format import _assistant_text
from orchestra.tools.spec import ToolSpec
from orchestra.types import Message


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of one conversation and the loss mask (1 = written by the model, trained on)."""

    ids: tuple[int, ...]
    mask: tuple[int, ...]


def encode_conversation(backend: object, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Encoded:
    """The ids `LocalBackend` would hold after this conversation, with assistant tokens masked in.

    `backend` is a `LocalBackend` (typed loosely so this module imports no torch).
    """
    fmt = backend.chat_format  # type: ignore[attr-defined]
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    end_id = _end_of_turn_id(backend)
    end_text = tokenizer.decode([end_id], skip_special_tokens=False)
    first = next(i for i, m in enumerate(messages) if m.role == "assistant")
    ids = list(_encode(tokenizer, fmt.render(messages[:first], tools, add_generation_prompt=True)))
    mask = [0] * len(ids)
    assistant_indices = [i for i, m in enumerate(messages) if m.role == "assistant"]
    for n, i in enumerate(assistant_indices):
        reply = _encode(tokenizer, _assistant_text(messages[i])) + [end_id]
        ids += reply
        mask += [1] * len(reply)
        following = assistant_indices[n + 1] if n + 1 < len(assistant_indices) else None
        if following is None:
            break
        closing, delta = fmt.continuation(messages[: i + 1], messages[i + 1 : following], tools)
        rest = _encode(tokenizer, closing.removeprefix(end_text) + delta)
        ids += rest
        mask += [0] * len(rest)
    return Encoded(tuple(ids), tuple(mask))


def _encode(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]


def _end_of_turn_id(backend: object) -> int:
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id in backend.end_ids:  # type: ignore[attr-defined]
            return token_id
    return min(backend.end_ids)  # type: ignore[attr-defined]
