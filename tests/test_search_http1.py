"""The search client's own HTTP/1.1 connection against raw asyncio servers that misbehave on purpose (a keep-alive
connection closed while idle, a chunked body, a non-HTTP answer, silence), and the service's lean `/search` route's
edge statuses (405, 413, 422) over real uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx2 as httpx
import pytest

from orchestra.errors import ConfigError
from orchestra.search.client import SearchClient, SearchServiceError
from orchestra.search.service import MAX_BODY_BYTES
from orchestra.tools.builtin.search import local_search_tool
from tests.test_search_service import service  # noqa: F401 - the uvicorn fixture

HIT = {"id": "a", "title": "A", "text": "alpha", "score": 1.5, "url": ""}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on 127.0.0.1 running `handler` per connection; yields its URL and a connection counter."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", connections


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


def _ok(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once() -> None:
    async def one_answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queries = json.loads(await _read_request(reader))["queries"]
        writer.write(_ok({"results": [[HIT] for _ in queries]}))
        await writer.drain()  # then closes without saying so, as an expired keep-alive does

    async with raw_server(one_answer_then_close) as (url, connections):
        client = SearchClient(url, timeout_s=5)
        assert await client.search("x", k=1) == await client.search("y", k=1)
        assert len(connections) == 2  # the second request found the first connection closed and opened another
        await client.aclose()


async def test_chunked_responses_are_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        body = json.dumps({"results": [[HIT]]}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
                     + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(chunked) as (url, _):
        hits = await SearchClient(url, timeout_s=5).search_many(["x"], k=1)
    assert [h.to_json() for h in hits[0]] == [HIT]


@pytest.mark.parametrize(("answer", "message"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "is unreachable: not an HTTP/1.x response"),
    (b"HTTP/1.1 503 Busy\r\ncontent-length: 19\r\n\r\n{\"detail\": \"busy!\"}", "answered 503: busy!"),
    (None, "did not answer in 0.5 s"),
])
async def test_bad_or_silent_servers_are_one_error_naming_the_url(answer: bytes | None, message: str) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        await reader.read()

    async with raw_server(misbehave) as (url, _):
        with pytest.raises(SearchServiceError, match=f"search service {url} {message}"):
            await SearchClient(url, timeout_s=0.5).search("x")


def test_a_url_that_is_not_http_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="search service URL '127.0.0.1:8765': not an http"):
        SearchClient("127.0.0.1:8765")
    with pytest.raises(ConfigError, match="ftp://x"):
        local_search_tool(url="ftp://x")


def test_the_lean_route_answers_405_413_and_fastapi_shaped_422(service) -> None:  # noqa: F811
    url, _ = service
    assert httpx.get(f"{url}/search").status_code == 405
    too_big = b'{"query": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert httpx.post(f"{url}/search", content=too_big).status_code == 413
    response = httpx.post(f"{url}/search", content=b"{not json")
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    response = httpx.post(f"{url}/search", json={"query": "x", "k": 0})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "k"]
