"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks, with fault injection.

It speaks `POST /v1/chat/completions` (JSON, and SSE when `"stream": true`, with the usage chunk when
`stream_options.include_usage` is set) and `GET /v1/models`. What it answers is decided per request by `handler`,
a function of the `SeenRequest` returning a `Reply` (content, tool calls, usage) or a `Fault` (all defined in
`tests.servers.scripts`, re-exported here):
- `Fault("status", status=429, retry_after="1")`: an OpenAI-shaped error body (optionally echoing the request's
  headers, Authorization included, as some proxies do);
- `Fault("blackhole")`: read the request, never answer (until the server stops);
- `Fault("drop")`: close the connection without answering;
- `Fault("truncate", keep_chunks=2)`: a stream cut after `keep_chunks` events (no final chunk, no `[DONE]`), or a
  JSON body cut in half;
- `Fault("stall", keep_chunks=2)`: a stream that sends `keep_chunks` events, then nothing (until the server stops);
- `Fault("huge", size_bytes=10_000_000)`: a response whose content is `size_bytes` long (JSON or SSE), with its
  usage reported at the end as real servers do.
`overshooting(handler)` makes any script ignore `max_tokens` (F13): each reply runs to `factor` times the limit, one
stream event per token, and reports that usage, with the prompt counted as a one-token-per-byte tokenizer would.
`reasoning_rules(handler)` answers 400 as OpenAI does when a reasoning model is sent `max_tokens`, `stop` or a
non-default `temperature`/`top_p`.
`max_in_flight` records how many completions were being answered at once (tests assert their load overlapped).
"Endpoint down" needs no server: `unused_port()` gives a port nothing listens on (connection refused).

Implementation: a small HTTP/1.1 server on asyncio streams (keep-alive, Content-Length requests, chunked SSE), run
in a background thread by `start()` or in the current loop by `serve()`. Every request is recorded in `requests`
(with its arrival time) so tests can assert how many attempts a client made and how fast.
Run standalone (for benchmarks in another process): `python -m tests.servers.scripted_openai --script ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.servers.scripts import (  # re-exported: tests import the scripts from the server's module
    Fault,
    Handler,
    Reply,
    SeenRequest,
    always,
    byte_tokens,
    flaky,
    overshooting,
    reasoning_rules,
    sequence,
    tool_then_answer,
)

__all__ = ["Fault", "Handler", "Reply", "ScriptedOpenAIServer", "SeenRequest", "always", "byte_tokens", "flaky",
           "overshooting", "reasoning_rules", "sequence", "tool_then_answer", "unused_port"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _State:
    requests: list[SeenRequest] = field(default_factory=list)
    connections: int = 0


class ScriptedOpenAIServer:
    """The server. `handler` may be replaced between requests; `requests` lists what arrived."""

    def __init__(self, handler: Handler | None = None, *, port: int = 0, record: bool = True,
                 latency_s: float = 0.0, slots: int | None = None):
        self.handler: Handler = handler or always(Reply())
        self.port = port
        self.record = record
        self.latency_s = latency_s
        """Each completion takes this long (a model server's generation time)."""
        self.slots = slots
        """At most this many completions are generated at once; the rest wait (a model server's batch size)."""
        self._slot_gate: asyncio.Semaphore | None = None
        self._state = _State()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        """The most completions being answered at the same moment since start."""
        self._ids = itertools.count(1)
        self._huge_cache: dict[tuple[int, int, int], bytes] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._state.requests)

    @property
    def connections(self) -> int:
        return self._state.connections

    @property
    def open_connections(self) -> int:
        """Connections the server has not yet seen closed."""
        return len(self._writers)

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def start(self) -> ScriptedOpenAIServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(ready)), daemon=True,
                                        name="scripted-openai")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve(self, ready: threading.Event | None = None) -> None:
        """Serve in the running loop until `stop()`."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=2048)
        self.port = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            # Let every connection task see its closed socket and end, so none is cancelled mid-read at exit.
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self._state.connections += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must close."""
        line = await reader.readline()
        if not line.strip():
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        payload = await reader.readexactly(length) if length else b""
        try:
            body = json.loads(payload) if payload else None
        except json.JSONDecodeError:
            body = None
        request = SeenRequest(time.monotonic(), method, path.split("?")[0], headers, body)
        if self.record:
            with self._lock:
                self._state.requests.append(request)
        keep = headers.get("connection", "").lower() != "close"
        if request.path.endswith("/models") and method == "GET":
            await _send_json(writer, 200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
            return keep
        if not request.path.endswith("/chat/completions") or method != "POST" or body is None:
            await _send_json(writer, 404 if body is not None else 400, _error("not found or bad body", 404))
            return keep
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._answer(request, writer) and keep
        finally:
            self._in_flight -= 1

    async def _answer(self, request: SeenRequest, writer: asyncio.StreamWriter) -> bool:
        if self.latency_s > 0 or self.slots is not None:
            await self._generate()
        try:
            answer = self.handler(request)
        except Exception as exc:  # noqa: BLE001 - a broken test script must show up as a 500, not a hang
            answer = Fault("status", status=500, body=json.dumps(_error(f"handler failed: {exc!r}", 500)))
        if isinstance(answer, Fault):
            return await self._fault(answer, request, writer)
        if request.stream:
            await self._send_stream(writer, answer, request)
        else:
            await _send_json(writer, 200, self._completion(answer, request))
        return True

    async def _generate(self) -> None:
        """Hold one of `slots` for `latency_s`, as a model server holds a batch slot while it generates."""
        if self.slots is None:
            await asyncio.sleep(self.latency_s)
            return
        if self._slot_gate is None:
            self._slot_gate = asyncio.Semaphore(self.slots)
        async with self._slot_gate:
            await asyncio.sleep(self.latency_s)

    async def _fault(self, fault: Fault, request: SeenRequest, writer: asyncio.StreamWriter) -> bool:
        if fault.kind == "blackhole":
            assert self._stopping is not None
            await self._stopping.wait()
            return False
        if fault.kind == "drop":
            writer.transport.abort()
            return False
        if fault.kind == "status":
            message = f"scripted failure {fault.status}"
            if fault.echo_headers:
                message += "; request headers: " + ", ".join(f"{k}: {v}" for k, v in request.headers.items())
            body = fault.body if fault.body is not None else json.dumps(_error(message, fault.status))
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            await _send(writer, fault.status, body.encode(), "application/json", extra)
            return True
        if fault.kind == "huge":
            await self._send_huge(writer, fault, request)
            return True
        # truncate or stall
        if request.stream:
            events = self._events(Reply(content="partial answer that will never finish " * 4,
                                        stream_pieces=8), request)
            await _start_stream(writer)
            for event in events[: fault.keep_chunks]:
                await _send_chunk(writer, event)
            if fault.kind == "stall":
                assert self._stopping is not None
                await self._stopping.wait()
        else:
            data = json.dumps(self._completion(Reply(content="cut " * 50), request)).encode()
            await _send(writer, 200, data[: len(data) // 2], "application/json",
                        {"Content-Length-Override": str(len(data))})
        writer.transport.abort()
        return False

    def _completion(self, reply: Reply, request: SeenRequest) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = list(reply.tool_calls)
        out: dict[str, Any] = {
            "id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": reply.model or (request.body or {}).get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
        }
        if reply.usage is not None:
            out["usage"] = _usage(reply.usage)
        return out

    def _events(self, reply: Reply, request: SeenRequest) -> list[bytes]:
        base = {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": reply.model or (request.body or {}).get("model", "scripted")}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        events = [chunk({"role": "assistant", "content": ""})]
        text = reply.content or ""
        step = max(1, -(-len(text) // max(1, reply.stream_pieces)))
        events += [chunk({"content": text[i : i + step]}) for i in range(0, len(text), step)]
        for index, call in enumerate(reply.tool_calls):
            fn = call["function"]
            events.append(chunk({"tool_calls": [{"index": index, "id": call.get("id"), "type": "function",
                                                 "function": {"name": fn["name"], "arguments": ""}}]}))
            half = len(fn["arguments"]) // 2
            for piece in (fn["arguments"][:half], fn["arguments"][half:]):
                events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        events.append(chunk({}, _finish(reply)))
        if reply.usage is not None and ((request.body or {}).get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**base, "choices": [], "usage": _usage(reply.usage)}))
        events.append(b"data: [DONE]\n\n")
        return events

    async def _send_stream(self, writer: asyncio.StreamWriter, reply: Reply, request: SeenRequest) -> None:
        await _start_stream(writer)
        for event in self._events(reply, request):
            await _send_chunk(writer, event)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _send_huge(self, writer: asyncio.StreamWriter, fault: Fault, request: SeenRequest) -> None:
        key = (fault.size_bytes, int(request.stream), hash(fault.usage))
        if key not in self._huge_cache:  # built once: tests measure the client's memory, not ours
            self._huge_cache[key] = self._huge_body(fault, request)
        data = self._huge_cache[key]
        if not request.stream:
            await _send(writer, 200, data, "application/json")
            return
        await _start_stream(writer)
        view = memoryview(data)
        for start in range(0, len(data), 1 << 20):
            piece = view[start : start + (1 << 20)]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _huge_body(self, fault: Fault, request: SeenRequest) -> bytes:
        if not request.stream:
            reply = Reply(content="x" * fault.size_bytes, usage=fault.usage, finish_reason="length")
            return json.dumps(self._completion(reply, request)).encode()
        piece = "y" * 16384
        reply = Reply(content=piece, usage=fault.usage, finish_reason="length", stream_pieces=1)
        events = self._events(reply, request)
        middle = events[1]
        repeats = max(1, fault.size_bytes // len(middle))
        return b"".join([events[0], middle * repeats, *events[2:]])


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}


def _error(message: str, status: int) -> dict[str, Any]:
    kind = "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _send(writer: asyncio.StreamWriter, status: int, data: bytes, content_type: str,
                extra: dict[str, str] | None = None) -> None:
    extra = dict(extra or {})
    length = extra.pop("Content-Length-Override", str(len(data)))  # a lie, for the cut-body fault
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
            f"Content-Length: {length}", *(f"{k}: {v}" for k, v in extra.items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    await writer.drain()


async def _send_json(writer: asyncio.StreamWriter, status: int, obj: dict[str, Any]) -> None:
    await _send(writer, status, json.dumps(obj).encode(), "application/json")


async def _start_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    await writer.drain()


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


_SCRIPTS: dict[str, Callable[[], Handler]] = {
    "ok": lambda: always(Reply()),
    "tool-then-answer": lambda: tool_then_answer("echo", {"text": "hi"}, "done"),
    "huge": lambda: always(Fault("huge")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", choices=sorted(_SCRIPTS), default="ok")
    parser.add_argument("--latency-s", type=float, default=0.0, help="Seconds each completion takes.")
    parser.add_argument("--slots", type=int, default=None, help="Completions generated at once (the rest wait).")
    args = parser.parse_args()
    server = ScriptedOpenAIServer(_SCRIPTS[args.script](), port=args.port, record=False, latency_s=args.latency_s,
                                  slots=args.slots)
    ready = threading.Event()

    async def run() -> None:
        task = asyncio.create_task(server.serve(ready))
        while not ready.is_set():
            await asyncio.sleep(0.01)
        print(f"READY {server.base_url}", flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
