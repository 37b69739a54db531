"""A search index served over HTTP, for large corpora shared by many rollouts (`orchestra index serve DIR`).

Routes
- `POST /search` `{"queries": [...], "k": 5, "mode": null}` (or `"query": "..."` for one) ->
  `{"results": [[hit, ...], ...]}`, one list per query, in order; a bad body is a 422 naming the field.
- `GET /health` -> the index's size, format version and whether it has a dense part.
- `GET /stats` -> requests and queries served, batches run, the largest batch and the most requests in flight at once
  (tests use these to prove that concurrent requests overlapped and were batched).

Batching: requests queue their queries; one worker takes everything queued (up to `max_batch_queries`), runs it as one
`search_many` call in a thread, and answers each request. No request waits for a batch to fill: an idle service
answers at once, and a busy one batches exactly the queries that arrived while the previous batch ran.
Binds 127.0.0.1 unless told otherwise.

Per-request CPU (what decides latency under many single-query clients; docs/benchmarks.md, search): `/search` is
served by a bare ASGI handler (pydantic validation of the body, the same 422 shape as FastAPI's) rather than a
FastAPI route, whose routing, dependency and encoder layers cost more than the BM25 query itself; the other routes
go through FastAPI. uvicorn parses HTTP with httptools (in the `search` extra) rather than the pure-Python h11.
Measured: ~0.2 ms of service CPU per one-query request, down from ~0.8 ms.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic

from orchestra.search.index import MAX_K, Hit, Mode, SearchIndex

DEFAULT_HOST = "127.0.0.1"
MAX_QUERIES_PER_REQUEST = 256
MAX_QUERY_CHARS = 4_000
MAX_BODY_BYTES = 4 * MAX_QUERIES_PER_REQUEST * MAX_QUERY_CHARS + 64 * 1024
"""Room for the largest valid request with every character taking 4 bytes of UTF-8."""


class SearchRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    query: str | None = pydantic.Field(None, max_length=MAX_QUERY_CHARS, description="One query.")
    queries: list[Annotated[str, pydantic.StringConstraints(max_length=MAX_QUERY_CHARS)]] | None = pydantic.Field(
        None, max_length=MAX_QUERIES_PER_REQUEST, description="Several queries, answered in order.")
    k: int = pydantic.Field(5, ge=1, le=MAX_K, description="Hits per query.")
    mode: Mode | None = pydantic.Field(None, description="bm25, dense or hybrid (default: the index's best).")

    @pydantic.model_validator(mode="after")
    def _one_form(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of `query` or `queries`")
        return self

    def all_queries(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


@dataclass
class ServiceStats:
    requests: int = 0
    queries: int = 0
    batches: int = 0
    max_batch_queries: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass
class _Pending:
    queries: list[str]
    k: int
    mode: Mode | None
    done: asyncio.Future[list[list[Hit]]] = field(repr=False)


class Batcher:
    """Coalesces the queries of concurrent requests into `search_many` calls (see the module docstring)."""

    def __init__(self, index: SearchIndex, stats: ServiceStats, max_batch_queries: int = 256):
        self.index = index
        self.stats = stats
        self.max_batch_queries = max_batch_queries
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def search(self, queries: list[str], k: int, mode: Mode | None) -> list[list[Hit]]:
        pending = _Pending(queries, k, mode, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        return await pending.done

    async def run(self) -> None:
        """The worker loop: take what is queued, search it in one call per mode, answer; until cancelled."""
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].queries)
            while not self._queue.empty() and size < self.max_batch_queries:
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].queries)
            self.stats.batches += 1
            self.stats.max_batch_queries = max(self.stats.max_batch_queries, size)
            for mode in {p.mode for p in batch}:
                group = [p for p in batch if p.mode == mode]
                await self._answer(group, mode)

    async def _answer(self, group: list[_Pending], mode: Mode | None) -> None:
        queries = [q for p in group for q in p.queries]
        k = max(p.k for p in group)
        try:
            results = await asyncio.to_thread(self.index.search_many, queries, k, mode)
        except Exception as exc:  # noqa: BLE001 - the requests of this batch get the error; the worker goes on
            for p in group:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        start = 0
        for p in group:
            if not p.done.done():
                p.done.set_result([hits[:p.k] for hits in results[start:start + len(p.queries)]])
            start += len(p.queries)


class HitEncoder:
    """Hits as JSON objects (`Hit.to_json`'s fields), with each document's fixed fields escaped once: JSON-escaping
    the 500-character snippets of every answer cost as much CPU as the search itself. The cache holds at most
    `max_entries` documents (then new ones are encoded each time)."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._fixed: dict[tuple[str, str, str, str], str] = {}

    def encode(self, hit: Hit) -> str:
        key = (hit.id, hit.title, hit.text, hit.url)
        fixed = self._fixed.get(key)
        if fixed is None:
            fixed = json.dumps({"id": hit.id, "title": hit.title, "text": hit.text, "url": hit.url},
                               ensure_ascii=False)[:-1]
            if len(self._fixed) < self.max_entries:
                self._fixed[key] = fixed
        return f'{fixed}, "score": {json.dumps(hit.score)}}}'


def create_app(index: SearchIndex, *, max_batch_queries: int = 256) -> Any:
    """The ASGI app serving `index`: `POST /search` on a lean path, everything else through FastAPI."""
    from fastapi import FastAPI

    stats = ServiceStats()
    batcher = Batcher(index, stats, max_batch_queries)
    encoder = HitEncoder()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            worker.cancel()

    api = FastAPI(title="orchestra search", lifespan=lifespan)

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "n_docs": len(index.docs), "format_version": index.manifest["format_version"],
                "dense": index.has_dense}

    @api.get("/stats")
    async def get_stats() -> dict[str, int]:
        return {k: v for k, v in vars(stats).items() if k != "in_flight"}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # The search route skips FastAPI's routing, dependency and encoder layers: per request they cost more
        # CPU than a BM25 query, and under many concurrent single-query clients that CPU is the latency.
        if scope["type"] == "http" and scope["path"] == "/search":
            await _search_route(receive, send, scope["method"], batcher, stats, encoder)
        else:
            await api(scope, receive, send)

    return app


async def _search_route(receive: Any, send: Any, method: str, batcher: Batcher, stats: ServiceStats,
                        encoder: HitEncoder) -> None:
    """`POST /search`: validate the body with `SearchRequest`, search through the batcher, answer JSON."""
    if method != "POST":
        await _send_json(send, 405, {"detail": "Method Not Allowed"}, [(b"allow", b"POST")])
        return
    body = await _read_body(receive)
    if body is None:
        await _send_json(send, 413, {"detail": f"request body over {MAX_BODY_BYTES} bytes"})
        return
    try:
        request = SearchRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:  # the same shape as FastAPI's request validation errors
        errors = json.loads(exc.json(include_url=False, include_context=False, include_input=False))
        await _send_json(send, 422, {"detail": [{**e, "loc": ["body", *e["loc"]]} for e in errors]})
        return
    stats.requests += 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        queries = request.all_queries()
        stats.queries += len(queries)
        results = await batcher.search(queries, request.k, request.mode)
    except ValueError as exc:  # a mode the index cannot serve
        await _send_json(send, 422, {"detail": str(exc)})
        return
    finally:
        stats.in_flight -= 1
    body = '{"results": [' + ", ".join("[" + ", ".join(encoder.encode(h) for h in hits) + "]" for hits in results)
    await _send_body(send, 200, (body + "]}").encode())


async def _read_body(receive: Any) -> bytes | None:
    """The request body, or None when it is over `MAX_BODY_BYTES` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_json(send: Any, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await _send_body(send, status, json.dumps(payload, ensure_ascii=False).encode(), headers)


async def _send_body(send: Any, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def serve(index: SearchIndex, *, host: str = DEFAULT_HOST, port: int = 8765) -> None:
    """Serve a loaded index until interrupted (blocking)."""
    import uvicorn

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    uvicorn.run(create_app(index), host=host, port=port, log_level="warning", access_log=False, http=http)
