"""local_search: the orchestrator's search over a document collection, from an index folder or a search service.

Pool YAML:
    - builtin: local_search
      options: {index: runs/pydocs-index}            # a folder made by `orchestra index build`
    - builtin: local_search
      options: {url: "http://127.0.0.1:8765", usd_per_call: 0.0005}   # `orchestra index serve`

Cost model: a flat price per query (`usd_per_call`, $0 by default: a local index costs nothing per call; set it to
charge a hosted service or to make the orchestrator economise), plus the typical latency shown to the orchestrator.
A missing or other-version index folder is a `ConfigError` when the pool is built (it names the folder and how to
rebuild it); a service that is down or slow becomes an error observation on the call, and the episode goes on.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pydantic

from orchestra.errors import ConfigError
from orchestra.search.index import Mode, SearchIndex
from orchestra.tools.spec import CostCard, Tool, tool

MAX_TOOL_K = 20


def local_search_tool(
    index: str | None = None,
    url: str | None = None,
    usd_per_call: Annotated[float, pydantic.Field(ge=0)] = 0.0,
    latency_s: Annotated[float, pydantic.Field(ge=0)] = 0.0,
    mode: Mode | None = None,
    timeout_s: Annotated[float, pydantic.Field(gt=0)] = 10.0,
) -> Tool:
    """The `local_search` tool over the index folder `index` or the search service at `url` (exactly one)."""
    if (index is None) == (url is None):
        raise ConfigError("local_search needs exactly one of `index` (an index folder) or `url` (a search service)")
    if index is not None:
        loaded = SearchIndex.load(index)
        if mode not in (None, "bm25") and not loaded.has_dense:
            raise ConfigError(f"mode {mode!r} needs a dense index; rebuild {index} with "
                              "`orchestra index build --dense`")

        async def run(query: str, k: int) -> list[Any]:
            return await asyncio.to_thread(loaded.search, query, k, mode)
    else:
        from orchestra.search.client import SearchClient

        client = SearchClient(url or "", timeout_s=timeout_s)

        async def run(query: str, k: int) -> list[Any]:
            return await client.search(query, k, mode)

    async def local_search(
        query: str, k: Annotated[int, pydantic.Field(ge=1, le=MAX_TOOL_K)] = 5
    ) -> list[dict[str, Any]]:
        """Search the document collection; returns the best-matching passages (id, title, text, score, url).

        Args:
            query: what to look for, in plain words
            k: how many passages to return (1-20)
        """
        return [hit.to_json() for hit in await run(query, k)]

    card = CostCard(usd_per_call=usd_per_call, latency_s=latency_s)
    return tool(local_search, name="local_search", cost=card, kind="basic", timeout_s=timeout_s)
