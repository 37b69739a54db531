"""What the scripted OpenAI-compatible server answers: `Reply` and `Fault`, the `SeenRequest` a handler decides on,
and ready-made handlers (fixed, in sequence, flaky, tool-then-answer; `overshooting` and `reasoning_rules` wrap any
handler). The server itself is `tests.servers.scripted_openai`, which re-exports all of these.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Reply:
    """A successful completion. `tool_calls` are OpenAI-shaped dicts; `usage` is (prompt, completion) tokens."""

    content: str | None = "ok"
    tool_calls: Sequence[dict[str, Any]] = ()
    usage: tuple[int, int] | None = (10, 5)
    finish_reason: str | None = None
    model: str | None = None
    stream_pieces: int = 4


@dataclass(frozen=True)
class Fault:
    kind: Literal["status", "blackhole", "drop", "truncate", "stall", "huge"]
    status: int = 500
    retry_after: str | None = None
    body: str | None = None
    echo_headers: bool = False
    keep_chunks: int = 2
    size_bytes: int = 10_000_000
    usage: tuple[int, int] = (120, 2_500_000)


@dataclass(frozen=True)
class SeenRequest:
    time_s: float
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None

    @property
    def stream(self) -> bool:
        return bool(self.body and self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages") or [])


Handler = Callable[[SeenRequest], Reply | Fault]


def always(answer: Reply | Fault) -> Handler:
    return lambda request: answer


def sequence(*answers: Reply | Fault, then: Reply | Fault = Reply()) -> Handler:
    """Answer with `answers` in order, then `then` forever."""
    queue = iter(answers)
    lock = threading.Lock()

    def handler(request: SeenRequest) -> Reply | Fault:
        with lock:
            return next(queue, then)

    return handler


def flaky(rate: float, fault: Fault, *, seed: int = 0, otherwise: Handler | None = None) -> Handler:
    """`fault` with probability `rate` (seeded), else `otherwise`."""
    rng = random.Random(seed)
    lock = threading.Lock()
    otherwise = otherwise or always(Reply())

    def handler(request: SeenRequest) -> Reply | Fault:
        with lock:
            hit = rng.random() < rate
        return fault if hit else otherwise(request)

    return handler


def tool_then_answer(name: str, arguments: dict[str, Any], answer: str = "done", *, hermes: bool = False,
                     usage: tuple[int, int] = (50, 10)) -> Handler:
    """First turn: call `name` (structured tool_calls, or a hermes block in the text); after a tool result: `answer`."""
    counter = itertools.count()

    def handler(request: SeenRequest) -> Reply:
        if any(m.get("role") == "tool" for m in request.messages):
            return Reply(content=answer, usage=usage)
        n = next(counter)
        if hermes:
            text = f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'
            return Reply(content=text, usage=usage)
        call = {"id": f"call_s{n}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)}}
        return Reply(content=None, tool_calls=(call,), usage=usage)

    return handler


def byte_tokens(request: SeenRequest) -> int:
    """Prompt tokens as the densest real tokenizer (one token per UTF-8 byte) counts the request's messages and tools."""
    body = request.body or {}
    parts = [m.get("content") or "" for m in request.messages]
    parts += [json.dumps(c, ensure_ascii=False) for m in request.messages for c in m.get("tool_calls") or []]
    parts += [json.dumps(t, ensure_ascii=False) for t in body.get("tools") or []]
    return sum(len(p.encode()) for p in parts) + 5 * len(request.messages)


def overshooting(handler: Handler, factor: int = 3, filler: str = "字") -> Handler:
    """`handler`'s replies stretched to `factor` x the request's `max_tokens`, ignoring the limit as a broken server
    would: the text grows with `filler` (one token each), streams send one event per token, usage says so."""

    def stretched(request: SeenRequest) -> Reply | Fault:
        answer = handler(request)
        if isinstance(answer, Fault):
            return answer
        tokens = factor * int((request.body or {}).get("max_tokens") or 16)
        text = (answer.content or "") + filler * max(0, tokens - len(answer.content or ""))
        return dataclasses.replace(answer, content=text, usage=(byte_tokens(request), tokens),
                                   stream_pieces=len(text), finish_reason="stop")

    return stretched


def reasoning_rules(handler: Handler, prefixes: tuple[str, ...] = ("gpt-5", "o1", "o3", "o4")) -> Handler:
    """`handler` behind the request rules OpenAI applies to its reasoning models (names starting with `prefixes`):
    a 400 `unsupported_parameter` for `max_tokens`, `stop`, or a `temperature`/`top_p` other than the default 1."""

    def strict(request: SeenRequest) -> Reply | Fault:
        body = request.body or {}
        if str(body.get("model", "")).startswith(prefixes):
            for name in ("max_tokens", "stop"):
                if name in body:
                    return _unsupported(f"Unsupported parameter: '{name}' is not supported with this model.")
            for name in ("temperature", "top_p"):
                if name in body and body[name] != 1:
                    return _unsupported(f"Unsupported value: '{name}' does not support {body[name]} with this "
                                        "model. Only the default (1) value is supported.")
        return handler(request)

    return strict


def _unsupported(message: str) -> Fault:
    return Fault("status", status=400, body=json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": "unsupported_parameter"}}))
