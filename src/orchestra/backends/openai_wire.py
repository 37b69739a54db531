"""The OpenAI chat-completions wire format, read with bounded memory (RELIABILITY F8, F9).

Pure helpers for `openai_compat`: the request body, a bounded reader for response bodies, a parser for whole
bodies with a salvage path for oversized ones, an accumulator for SSE streams, the `base_url` check, and the scrub
that keeps our own key (when it can be a secret) out of a reply.

Invariants
- No response is ever held whole: `read_bounded` keeps the first `head_bytes` and the last `tail_bytes` of a body and
  drops the middle (a 10 MB body costs at most head + tail bytes of memory); SSE lines longer than a bound stop the
  stream. What the model wrote is capped at `max_chars` characters before it can reach the context.
- An oversized non-streamed body is salvaged, not discarded: the start of `message.content` is decoded from the head
  and the usage the server reported is read from the tail (OpenAI-compatible servers write `usage` last), so the
  caller still bills what the provider billed. Structured tool calls cut away with the middle are lost; hermes
  `<tool_call>` blocks in the salvaged text are still parsed by the caller.
- A stream is complete only when it sent `[DONE]`, or its finish reason and its usage; anything else is a cut stream,
  which the caller must treat as a failure, never as an answer.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import httpx2 as httpx
except ImportError:  # an older `openai` that still depends on plain httpx
    import httpx  # type: ignore[no-redef]

from orchestra.backends.base import Sampling
from orchestra.errors import ConfigError
from orchestra.redact import is_secret_value, redact
from orchestra.tools.spec import ToolSpec
from orchestra.types import Message, Usage


class WireError(ValueError):
    """The server sent something that is not an OpenAI chat completion (bad JSON, no choices, an error object)."""


REASONING_PREFIXES = ("gpt-5", "o1", "o3", "o4")
"""Model-name prefixes of OpenAI's reasoning models (`reasoning: auto` decides by these)."""


def is_reasoning_model(name: str) -> bool:
    """Whether `name` is one of OpenAI's reasoning models, by prefix; a router's `vendor/` prefix is ignored."""
    base = name.rsplit("/", 1)[-1].lower()
    return base.startswith(REASONING_PREFIXES)


def request_body(
    model: str,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    sampling: Sampling,
    *,
    stream: bool,
    extra_body: Mapping[str, Any] | None = None,
    reasoning: bool = False,
) -> dict[str, Any]:
    """The JSON body of one `/chat/completions` request.

    A reasoning model (`reasoning=True`) gets `max_completion_tokens` (its reasoning tokens count against it) instead
    of `max_tokens`, and no `temperature`, `top_p` or `stop`: those models answer 400 to anything but the defaults.
    `extra_body` is merged last, so it can add provider fields (e.g. `chat_template_kwargs`).
    """
    body: dict[str, Any] = {"model": model, "messages": [m.to_openai() for m in messages]}
    if reasoning:
        body["max_completion_tokens"] = sampling.max_tokens
    else:
        body["temperature"] = sampling.temperature
        body["top_p"] = sampling.top_p
        body["max_tokens"] = sampling.max_tokens
    if tools:
        body["tools"] = [t.to_openai() for t in tools]
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.stop and not reasoning:
        body["stop"] = list(sampling.stop)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if extra_body:
        body.update(extra_body)
    return body


@dataclass(frozen=True, slots=True)
class Reply:
    """What one successful response said, before pricing and tool-call parsing."""

    text: str
    raw_tool_calls: list[dict[str, Any]]
    usage: Usage | None
    finish_reason: str
    model: str
    cut: bool = False
    """True when the text was cut (oversized body or stream): `text` is a prefix of what the model wrote."""


@dataclass(frozen=True, slots=True)
class BoundedBody:
    head: bytes
    tail: bytes
    total_bytes: int
    ended: bool
    """False when reading stopped at the total limit before the body ended."""

    @property
    def whole(self) -> bool:
        return self.ended and len(self.head) == self.total_bytes


async def read_bounded(
    chunks: AsyncIterator[bytes], *, head_bytes: int, tail_bytes: int = 64 * 1024, total_bytes: int = 64 << 20
) -> BoundedBody:
    """Read a body keeping at most `head_bytes` + `tail_bytes`; stop after `total_bytes` (the rest is not read)."""
    head = bytearray()
    tail: deque[bytes] = deque()
    tail_len = 0
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        room = head_bytes - len(head)
        if room > 0:
            head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            tail.append(chunk)
            tail_len += len(chunk)
            while tail and tail_len - len(tail[0]) >= tail_bytes:
                tail_len -= len(tail.popleft())
        if total >= total_bytes:
            return BoundedBody(bytes(head), b"".join(tail)[-tail_bytes:], total, ended=False)
    return BoundedBody(bytes(head), b"".join(tail)[-tail_bytes:], total, ended=True)


def parse_body(body: BoundedBody, *, max_chars: int) -> Reply:
    """A non-streamed response -> `Reply`; an oversized body is salvaged (see the module docstring)."""
    if not body.whole:
        return _salvage(body, max_chars)
    try:
        data = json.loads(body.head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireError(f"response is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WireError("response is not a JSON object")
    if data.get("error"):
        raise WireError(f"server returned an error object: {_error_text(data['error'])}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise WireError("response has no choices")
    message = choices[0].get("message") or {}
    text = message.get("content") or ""
    if not isinstance(text, str):  # content parts (a list): keep the text parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    raw_calls = [c for c in (message.get("tool_calls") or []) if isinstance(c, dict)]
    return Reply(
        text=text,
        raw_tool_calls=raw_calls,
        usage=usage_from(data.get("usage")),
        finish_reason=str(choices[0].get("finish_reason") or "stop"),
        model=str(data.get("model") or ""),
        cut=len(text) > max_chars,
    )


def usage_from(raw: Any) -> Usage | None:
    """OpenAI `usage` (prompt/completion tokens) -> `Usage`; None when absent or unreadable."""
    if not isinstance(raw, dict):
        return None
    try:
        return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        return None


def error_message(raw: bytes) -> str:
    """The human part of an error body: `error.message` when it is OpenAI-shaped JSON, else the text, shortened."""
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:500]
    if isinstance(data, dict) and "error" in data:
        return _error_text(data["error"])[:500]
    return text.strip()[:500]


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        parts = [str(err.get(k)) for k in ("message", "type", "code") if err.get(k)]
        return " | ".join(parts) or json.dumps(err)[:500]
    return str(err)


_CONTENT_START = re.compile(r'"message"\s*:\s*\{.*?"content"\s*:\s*"', re.DOTALL)
_MODEL = re.compile(r'"model"\s*:\s*"([^"\\]{0,200})"')
_PROMPT_TOKENS = re.compile(r'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(r'"completion_tokens"\s*:\s*(\d+)')
_FINISH = re.compile(r'"finish_reason"\s*:\s*"(\w+)"')


def _salvage(body: BoundedBody, max_chars: int) -> Reply:
    """The readable parts of a body too large to keep: content prefix from the head, usage from the tail."""
    head = body.head.decode("utf-8", "ignore")
    tail = body.tail.decode("utf-8", "ignore")
    match = _CONTENT_START.search(head)
    text = _json_string_prefix(head, match.end(), max_chars) if match else ""
    prompt = _PROMPT_TOKENS.findall(tail)
    completion = _COMPLETION_TOKENS.findall(tail)
    usage = Usage(int(prompt[-1]), int(completion[-1])) if prompt and completion and body.ended else None
    finish = _FINISH.findall(tail)
    model = _MODEL.search(head)
    return Reply(
        text=text,
        raw_tool_calls=[],
        usage=usage,
        finish_reason=finish[-1] if finish else "length",
        model=model.group(1) if model else "",
        cut=True,
    )


def _json_string_prefix(text: str, start: int, max_chars: int) -> str:
    """Decode the JSON string starting at `start` (after its quote), or as much of it as is whole."""
    raw = text[start : start + 6 * max_chars + 16]  # an escaped character takes at most 6 characters
    try:
        return json.decoder.scanstring(raw, 0, False)[0][: max_chars + 1]
    except ValueError:
        pass
    for cut in range(8):  # the prefix may end inside an escape (`\`, `\u12`): drop up to one escape's length
        try:
            return json.decoder.scanstring(raw[: len(raw) - cut] + '"', 0, False)[0][: max_chars + 1]
        except ValueError:
            continue
    return ""


class LineTooLong(WireError):
    """An SSE line exceeded the bound: the stream is treated as cut at the cap."""


async def sse_data(chunks: AsyncIterator[bytes], *, max_line_bytes: int) -> AsyncIterator[str]:
    """The `data:` payloads of an SSE stream, one per event line; raises `LineTooLong` past the bound."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if b"\n" in chunk:
            *lines, rest = bytes(buffer).split(b"\n")
            buffer = bytearray(rest)
            for line in lines:
                if line.startswith(b"data:"):
                    yield line[5:].strip().decode("utf-8", "replace")
        if len(buffer) > max_line_bytes:
            raise LineTooLong(f"an event line exceeded {max_line_bytes} bytes")
    if buffer.startswith(b"data:"):
        yield bytes(buffer[5:]).strip().decode("utf-8", "replace")


@dataclass
class StreamAccumulator:
    """Folds chat-completion chunks into one reply; stops keeping text past `max_chars` (`overflow`).

    `max_pieces` (the request's `max_tokens`): a delta carrying text or tool-call arguments holds at least one token,
    so more such deltas than `max_pieces` prove the server passed the limit (`over_pieces`); that piece is not kept.
    """

    max_chars: int
    max_pieces: int | None = None
    pieces: int = 0
    over_pieces: bool = False
    answered: bool = False
    """A plain (non-stream) response's 2xx status arrived: its generation is done, and billed."""
    parts: list[str] = field(default_factory=list)
    chars: int = 0
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str = ""
    done: bool = False
    overflow: bool = False
    events: int = 0
    """Data events received: any at all means the server began generating (and billing)."""

    @property
    def complete(self) -> bool:
        return self.done or (self.finish_reason is not None and self.usage is not None)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def feed(self, data: str) -> None:
        """One `data:` payload. Raises `WireError` for a non-JSON chunk or an error event."""
        self.events += 1
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as exc:
            raise WireError(f"stream chunk is not JSON ({exc.msg})") from None
        if not isinstance(chunk, dict):
            raise WireError("stream chunk is not a JSON object")
        if chunk.get("error"):
            raise WireError(f"server sent an error event: {_error_text(chunk['error'])}")
        self.model = chunk.get("model") or self.model
        self.usage = usage_from(chunk.get("usage")) or self.usage
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._feed_choice(choice)

    def _feed_choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if self._over_limit(delta):
            return
        if isinstance(delta.get("content"), str):
            self.parts.append(self._keep(delta["content"]))
        for entry in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(int(entry.get("index", 0)), {"function": {"name": "", "arguments": ""}})
            if entry.get("id"):
                slot["id"] = entry["id"]
            fn = entry.get("function") or {}
            if fn.get("name"):
                slot["function"]["name"] = fn["name"]  # names arrive whole; arguments arrive in pieces
            if isinstance(fn.get("arguments"), str):
                slot["function"]["arguments"] += self._keep(fn["arguments"])
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])

    def _over_limit(self, delta: dict[str, Any]) -> bool:
        carries = bool(delta.get("content")) or any(
            isinstance(e, dict) and (e.get("function") or {}).get("arguments") for e in delta.get("tool_calls") or []
        )
        if carries:
            self.pieces += 1
            if self.max_pieces is not None and self.pieces > self.max_pieces:
                self.over_pieces = True
        return self.over_pieces

    def _keep(self, piece: str) -> str:
        room = self.max_chars - self.chars
        if len(piece) > room:
            self.overflow = True
            piece = piece[: max(0, room)]
        self.chars += len(piece)
        return piece

    def raw_tool_calls(self) -> list[dict[str, Any]]:
        return [self.calls[i] for i in sorted(self.calls)]


def check_base_url(base_url: str) -> None:
    """A `ConfigError` unless `base_url` is an absolute http(s) URL (a missing scheme is a mistake, not a retry)."""
    parsed = httpx.URL(base_url) if "://" in base_url else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"base_url {redact(base_url)!r} is not an absolute http(s) URL: write it as "
                          "http://HOST:PORT/v1 or https://HOST/v1")


def scrub(text: str, key: str | None) -> str:
    """Mask our own key if the server echoed it into the reply (it must never enter the context). A key too short
    or too public to be a secret (`x`, `EMPTY`) is left alone: masking it would corrupt the answer (K3)."""
    return text.replace(key, "***") if key and is_secret_value(key) and key in text else text


def scrub_call(call: dict[str, Any], key: str | None) -> dict[str, Any]:
    fn = dict(call.get("function") or {})
    if isinstance(fn.get("arguments"), str):
        fn["arguments"] = scrub(fn["arguments"], key)
    elif key and is_secret_value(key) and key in str(fn.get("arguments")):
        fn["arguments"] = "{}"
    return {**call, "function": fn}
