"""A small keep-alive HTTP/1.1 client connection: the search client's hot path.

Why not a general HTTP client here: a search request is one small JSON POST answered in well under a millisecond,
so the client's own per-request CPU decides the latency under load. Measured on the project machine (2 cores), one
request through httpx2's `AsyncClient` cost ~1.6 ms of client CPU; one request on this connection costs a small
fraction of that (docs/benchmarks.md, search). It speaks only what the search service answers: `POST`/`GET`, a
`Content-Length` or chunked response body, keep-alive unless the server says `Connection: close`; http or https.

Invariants
- One request at a time per connection; a connection is reused only after its response was read whole.
- A reused connection that the server had already closed (its keep-alive ran out) fails before any byte of the
  response arrives: `StaleConnection`, which the caller may retry on a fresh connection (search is idempotent).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024


class StaleConnection(ConnectionError):
    """The server closed a kept-alive connection before answering; nothing of the response was read."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port and the path prefix of the service URL."""

    host: str
    port: int
    tls: bool
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


class Connection:
    """One open connection to `origin`."""

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self.reusable = True

    @classmethod
    async def open(cls, origin: Origin) -> Connection:
        context = ssl.create_default_context() if origin.tls else None
        reader, writer = await asyncio.open_connection(origin.host, origin.port, ssl=context,
                                                       limit=MAX_HEADER_BYTES)
        return cls(origin, reader, writer)

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        """Send one request and read its whole response (`path` is appended to the origin's prefix)."""
        head = (f"{method} {self.origin.prefix}{path} HTTP/1.1\r\nHost: {self.origin.host_header}\r\n"
                "Accept: application/json\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.reusable = False  # until the whole response has been read
        self._writer.write(head.encode("latin-1") + b"\r\n" + (body or b""))
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise StaleConnection("connection closed before the response") from None
            raise ConnectionError("connection closed inside the response headers") from None
        except ConnectionResetError:
            raise StaleConnection("connection reset before the response") from None
        except asyncio.LimitOverrunError:
            raise ConnectionError(f"response headers over {MAX_HEADER_BYTES} bytes") from None
        status, headers = _parse_head(raw)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            payload = await self._read_chunked()
        else:
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY_BYTES:
                raise ConnectionError(f"response body of {length} bytes is over the {MAX_BODY_BYTES}-byte cap")
            payload = await self._reader.readexactly(length)
        self.reusable = headers.get("connection", "").lower() != "close"
        return Response(status, payload)

    def close(self) -> None:
        self.reusable = False
        self._writer.close()

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            total += size
            if total > MAX_BODY_BYTES:
                raise ConnectionError(f"response body over the {MAX_BODY_BYTES}-byte cap")
            if size == 0:
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    fields = lines[0].split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
        raise ConnectionError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(fields[1]), headers
