"""A client of the search service (`orchestra.search.service`): the same hits as a local `SearchIndex`, over HTTP.

Failures are raised as `SearchServiceError` with the URL and the reason (unreachable, timed out, an HTTP status with
the service's message); a tool that calls the client turns them into an error observation for the model.
One async HTTP client is kept per event loop, so many rollouts in one loop share connections.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

try:
    import httpx2 as httpx
except ImportError:  # an older environment with plain httpx only
    import httpx  # type: ignore[no-redef]

from orchestra.search.index import Hit, Mode


class SearchServiceError(RuntimeError):
    """The search service could not answer (message names the URL and the reason)."""


class SearchClient:
    """Queries a search service at `url` (e.g. `http://127.0.0.1:8765`)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    async def search_many(self, queries: Sequence[str], k: int = 5, mode: Mode | None = None) -> list[list[Hit]]:
        client = self._client()
        try:
            response = await client.post(f"{self.url}/search", json=_body(queries, k, mode))
        except httpx.TimeoutException:
            raise SearchServiceError(f"search service {self.url} did not answer in {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise SearchServiceError(f"search service {self.url} is unreachable: {exc}") from None
        return _parse(self.url, response)

    async def search(self, query: str, k: int = 5, mode: Mode | None = None) -> list[Hit]:
        return (await self.search_many([query], k, mode))[0]

    def search_many_sync(self, queries: Sequence[str], k: int = 5, mode: Mode | None = None) -> list[list[Hit]]:
        try:
            response = httpx.post(f"{self.url}/search", json=_body(queries, k, mode), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise SearchServiceError(f"search service {self.url} is unreachable: {exc}") from None
        return _parse(self.url, response)

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(timeout=self.timeout_s)
            self._clients[loop] = client
        return client


def _body(queries: Sequence[str], k: int, mode: Mode | None) -> dict[str, Any]:
    return {"queries": list(queries), "k": k, "mode": mode}


def _parse(url: str, response: Any) -> list[list[Hit]]:
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise SearchServiceError(f"search service {url} answered {response.status_code}: {str(detail)[:300]}")
    return [[Hit(**hit) for hit in hits] for hits in response.json()["results"]]
