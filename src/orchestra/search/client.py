"""A client of the search service (`orchestra.search.service`): the same hits as a local `SearchIndex`, over HTTP.

Batching on the client side: the rollouts of one process share one client, and `search` coalesces the queries they
issue concurrently into one `POST /search` with many queries (at most `max_requests_in_flight` requests at once per
event loop; queries arriving meanwhile go into the next request). HTTP costs far more CPU per request than a BM25
query, so this is what keeps latency low when many rollouts search at once. `search_many` sends its queries as one
request directly.

Connections: each client keeps its own keep-alive connections per event loop (`orchestra.search.http1`, at most one
request per connection at a time), so separate clients behave like separate processes; a connection the service
closed while idle is replaced once, transparently. `aclose()` closes the current loop's connections.

Failures are raised as `SearchServiceError` with the URL and the reason (unreachable, timed out, an HTTP status with
the service's message); every query of a failed request gets the error. A tool that calls the client turns it into
an error observation for the model.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import httpx2 as httpx
except ImportError:  # an older environment with plain httpx only
    import httpx  # type: ignore[no-redef]

from orchestra.errors import ConfigError
from orchestra.search.http1 import Connection, Origin, Response, StaleConnection
from orchestra.search.index import Hit, Mode

MAX_QUERIES_PER_REQUEST = 256  # the service's limit per request


class SearchServiceError(RuntimeError):
    """The search service could not answer (message names the URL and the reason)."""


@dataclass
class _Query:
    text: str
    k: int
    mode: Mode | None
    done: asyncio.Future[list[Hit]] = field(repr=False)


@dataclass
class _LoopState:
    """What one event loop's callers share: idle connections, the queries waiting, the requests under way."""

    idle: list[Connection] = field(default_factory=list)
    waiting: list[_Query] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class SearchClient:
    """Queries a search service at `url` (e.g. `http://127.0.0.1:8765`)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, max_requests_in_flight: int = 2):
        self.url = url.rstrip("/")
        try:
            self._origin = Origin.parse(self.url)
        except ValueError as exc:
            raise ConfigError(f"search service URL {url!r}: {exc} (e.g. http://127.0.0.1:8765)") from None
        self.timeout_s = timeout_s
        self.max_requests_in_flight = max_requests_in_flight
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    async def search(self, query: str, k: int = 5, mode: Mode | None = None) -> list[Hit]:
        """The hits of one query, sent together with the queries other callers issue at the same time."""
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        item = _Query(query, k, mode, loop.create_future())
        state.waiting.append(item)
        if not state.scheduled:  # on the next loop pass, so callers started together share one request
            state.scheduled = True
            loop.call_soon(self._pump, state)
        return await item.done

    async def search_many(self, queries: Sequence[str], k: int = 5, mode: Mode | None = None) -> list[list[Hit]]:
        """The hits of each query, in one request."""
        state = self._state(asyncio.get_running_loop())
        return await self._post(state, list(queries), k, mode)

    async def aclose(self) -> None:
        """Close this event loop's idle connections (requests under way keep theirs until they finish)."""
        state = self._states.get(asyncio.get_running_loop())
        while state is not None and state.idle:
            state.idle.pop().close()

    def search_many_sync(self, queries: Sequence[str], k: int = 5, mode: Mode | None = None) -> list[list[Hit]]:
        try:
            response = httpx.post(f"{self.url}/search", json=_body(queries, k, mode), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise SearchServiceError(f"search service {self.url} is unreachable: {exc}") from None
        return _parse(self.url, response.status_code, response.content)

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        state = self._states.get(loop)
        if state is None:
            state = _LoopState()
            self._states[loop] = state
        return state

    def _pump(self, state: _LoopState) -> None:
        state.scheduled = False
        while state.waiting and state.in_flight < self.max_requests_in_flight:
            batch = state.waiting[:MAX_QUERIES_PER_REQUEST]
            del state.waiting[:MAX_QUERIES_PER_REQUEST]
            state.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(state, batch))
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)

    async def _send(self, state: _LoopState, batch: list[_Query]) -> None:
        try:
            for mode in dict.fromkeys(q.mode for q in batch):
                group = [q for q in batch if q.mode == mode]
                try:
                    results = await self._post(state, [q.text for q in group], max(q.k for q in group), mode)
                except SearchServiceError as exc:
                    for q in group:
                        if not q.done.done():
                            q.done.set_exception(exc)
                    continue
                for q, hits in zip(group, results, strict=True):
                    if not q.done.done():
                        q.done.set_result(hits[:q.k])
        finally:
            state.in_flight -= 1
            self._pump(state)

    async def _post(self, state: _LoopState, queries: list[str], k: int, mode: Mode | None) -> list[list[Hit]]:
        body = json.dumps(_body(queries, k, mode), ensure_ascii=False).encode()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._request(state, body)
        except TimeoutError:
            raise SearchServiceError(f"search service {self.url} did not answer in {self.timeout_s:g} s") from None
        except OSError as exc:  # refused, reset, closed mid-response (ConnectionError is an OSError)
            raise SearchServiceError(f"search service {self.url} is unreachable: {exc or type(exc).__name__}") \
                from None
        return _parse(self.url, response.status, response.body)

    async def _request(self, state: _LoopState, body: bytes) -> Response:
        """POST /search on an idle connection, or a new one; a stale idle connection is replaced once."""
        while True:
            reused = bool(state.idle)
            connection = state.idle.pop() if reused else await Connection.open(self._origin)
            try:
                response = await connection.request("POST", "/search", body)
            except StaleConnection:
                connection.close()
                if reused:
                    continue
                raise
            except BaseException:  # a timeout or cancellation mid-request leaves the stream unusable
                connection.close()
                raise
            if connection.reusable:
                state.idle.append(connection)
            else:
                connection.close()
            return response


def _body(queries: Sequence[str], k: int, mode: Mode | None) -> dict[str, Any]:
    return {"queries": list(queries), "k": k, "mode": mode}


def _parse(url: str, status: int, body: bytes) -> list[list[Hit]]:
    if status != 200:
        text = body.decode("utf-8", errors="replace")
        try:
            detail = json.loads(body).get("detail", text)
        except (ValueError, AttributeError):
            detail = text
        raise SearchServiceError(f"search service {url} answered {status}: {str(detail)[:300]}")
    return [[Hit(**hit) for hit in hits] for hits in json.loads(body)["results"]]
