"""The search service for real: uvicorn on 127.0.0.1 in a thread, concurrent clients, the tool over its URL."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import httpx2 as httpx
import pytest
import uvicorn

from orchestra.search.client import SearchClient, SearchServiceError
from orchestra.search.index import Hit, Mode, SearchIndex, build_index
from orchestra.search.service import create_app
from orchestra.tools.builtin.search import local_search_tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall
from tests.test_search import write_corpus

SEARCH_DELAY_S = 0.05


class SlowIndex(SearchIndex):
    """A real index whose every batch takes at least SEARCH_DELAY_S, so concurrent requests must overlap and queue."""

    def search_many(self, queries: Sequence[str], k: int = 5, mode: Mode | None = None) -> list[list[Hit]]:
        time.sleep(SEARCH_DELAY_S)
        return super().search_many(queries, k, mode)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SearchIndex]]:
    root = tmp_path_factory.mktemp("service")
    build_index(write_corpus(root / "docs.jsonl"), root / "index")
    loaded = SearchIndex.load(root / "index")
    index = SlowIndex(loaded.path, loaded.docs, loaded._retriever, None, loaded.manifest)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(index), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", index
    server.should_exit = True
    thread.join(5)


def _stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/stats").json()


QUERIES = [["immutable tuples", "hashable keys", "столица России", "日本 首都"][i % 4] for i in range(32)]


async def test_32_concurrent_clients_overlap_are_batched_and_get_their_own_answers(service) -> None:
    url, index = service
    before = _stats(url)
    clients = [SearchClient(url) for _ in QUERIES]  # 32 separate clients: one connection and request each
    results = await asyncio.gather(*(c.search(q, k=2) for c, q in zip(clients, QUERIES, strict=True)))
    after = _stats(url)
    for query, hits in zip(QUERIES, results, strict=True):
        assert hits == index.search(query, k=2)  # each request gets its own query's answer
    assert after["requests"] - before["requests"] == 32
    assert after["max_in_flight"] >= 8  # the requests really were in the service at the same time
    assert after["max_batch_queries"] >= 8  # ... and were answered together
    assert after["batches"] - before["batches"] <= 16  # one at a time would be 32 batches of one query


async def test_callers_sharing_a_client_are_coalesced_into_few_requests(service) -> None:
    url, index = service
    before = _stats(url)
    client = SearchClient(url)  # as the rollouts of one process share the pool's tool
    results = await asyncio.gather(*(client.search(q, k=1 + i % 3) for i, q in enumerate(QUERIES)))
    after = _stats(url)
    for i, (query, hits) in enumerate(zip(QUERIES, results, strict=True)):
        assert hits == index.search(query, k=1 + i % 3)
    assert after["queries"] - before["queries"] == 32
    assert after["requests"] - before["requests"] <= 2


def test_one_request_with_many_queries_and_the_health_route(service) -> None:
    url, index = service
    response = httpx.post(f"{url}/search", json={"queries": ["lists", "Λόγος", ""], "k": 1})
    assert response.status_code == 200
    assert [[h["id"] for h in hits] for hits in response.json()["results"]] == [["lists"], ["logos"], []]
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "n_docs": len(index.docs), "format_version": 1,
                                                 "dense": False}


@pytest.mark.parametrize(("body", "field"), [
    ({"k": 3}, "exactly one of `query` or `queries`"), ({"query": "x", "k": 0}, "k"),
    ({"query": "x", "mode": "dense"}, "needs a dense index"), ({"query": "x", "colour": 1}, "colour"),
])
def test_bad_requests_are_422_naming_the_problem(service, body: dict, field: str) -> None:
    url, _ = service
    response = httpx.post(f"{url}/search", json=body)
    assert response.status_code == 422 and field in response.text


async def test_tool_over_the_service_url(service) -> None:
    url, _ = service
    toolbox = Toolbox.of([local_search_tool(url=url)])
    obs = await toolbox.call(ToolCall("c1", "local_search", {"query": "ελληνικής φιλοσοφίας", "k": 1}))
    assert obs.status == "ok" and json.loads(obs.content)[0]["id"] == "logos"
    bad = await toolbox.call(ToolCall("c2", "local_search", {"query": "x", "k": 99}))
    assert bad.status == "format_error"


async def test_service_down_is_an_error_observation_not_an_exception() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    toolbox = Toolbox.of([local_search_tool(url=f"http://127.0.0.1:{port}", timeout_s=2)])
    obs = await toolbox.call(ToolCall("c1", "local_search", {"query": "lists"}))
    assert obs.status == "tool_error" and f"search service http://127.0.0.1:{port} is unreachable" in obs.content
    with pytest.raises(SearchServiceError, match="unreachable"):
        SearchClient(f"http://127.0.0.1:{port}").search_many_sync(["x"])
