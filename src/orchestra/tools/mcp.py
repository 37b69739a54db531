"""MCP import: the tools of an MCP server (stdio subprocess or streamable HTTP) as orchestra tools.

`mcp_tools(config)` connects once, lists the server's tools and returns one `Tool` per tool: its spec is the server's
name (after an optional `prefix`), description and `inputSchema` unchanged, priced by the pool entry's cost card; its
call goes through the one kept-open session of that server, so arguments are validated by our Toolbox against the
server's own schema before anything is sent.

Invariants
- One session per server entry, owned by a private event loop on a daemon thread: tools can be called from any event
  loop (each episode's, `asyncio.run` in the CLI, the MCP export server) and the session outlives all of them.
- Results become text: text blocks joined by newlines; images, audio, resource links and embedded resources are
  summarized in one bracketed line each, never dropped; `isError` results become `tool_error` observations.
- A server that dies mid-call gives an error naming the server and the call; that call is not retried (it may have
  had effects, and may be what killed the server). The next call reconnects, once per entry: after a second loss,
  every later call fails at once with the same reason. A transport found dead before a call is sent (an idle stdio
  server that exited) is reconnected before sending, from the same single reconnect.
- No hang: connecting and listing are bounded by `connect_timeout_s`, each call by `timeout_s` (the Toolbox's limit,
  with the SDK's read timeout a few seconds later as a backstop for calls made outside a Toolbox).
- The `mcp` SDK is imported here only, when a pool names an MCP server.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import sys
import threading
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from orchestra.config import McpServerConfig
from orchestra.errors import ConfigError
from orchestra.tools.spec import CostCard, Tool, ToolOutput, ToolSpec

_STARTUP_MARGIN_S = 5.0
"""Extra wait beyond `timeout_s` for the private loop to hand back a result it has itself bounded."""


class McpServerError(RuntimeError):
    """The MCP server could not be reached, died, or is no longer used; the message names the server and why."""


def mcp_tools(config: McpServerConfig, *, field: str = "mcp") -> list[Tool]:
    """Connect to the server of `config`, list its tools and wrap each (or each in `config.tools`) as a `Tool`.

    Raises `ConfigError` naming `field` when the server cannot be started or reached, or when the allow-list names a
    tool the server does not have. The session stays open until `close_tools` is given the tools, or the process
    exits."""
    return mcp_connect(config, field=field)[1]


def mcp_connect(config: McpServerConfig, *, field: str = "mcp") -> tuple[McpConnection, list[Tool]]:
    """`mcp_tools`, also returning the connection, for a caller that closes it before the process exits."""
    require_sdk(field)
    connection = McpConnection(config)
    try:
        listed = connection.list_tools()
    except McpServerError as exc:
        connection.close()
        raise ConfigError(f"{field}: {exc}") from None
    by_name = {t.name: t for t in listed}
    if config.tools is not None:
        missing = [name for name in config.tools if name not in by_name]
        if missing:
            connection.close()
            raise ConfigError(f"{field}.tools: server {connection.label!r} has no tool {', '.join(map(repr, missing))}; "
                              f"it has: {', '.join(sorted(by_name)) or 'none'}")
        by_name = {name: by_name[name] for name in config.tools}
    card = CostCard(usd_per_call=config.usd_per_call, latency_s=config.latency_s)
    return connection, [_wrap(connection, remote, card) for remote in by_name.values()]


def close_tools(tools: Iterable[Tool]) -> int:
    """Close the MCP connections behind `tools` (a stdio server is stopped), each once; tools of other kinds are
    left alone. For a caller holding only tools (e.g. a built pool's). Returns how many connections it closed."""
    connections = {id(c): c for c in map(connection_of, tools) if c is not None and not c.closed}
    for connection in connections.values():
        connection.close()
    return len(connections)


def connection_of(tool: Tool) -> McpConnection | None:
    """The connection an imported MCP tool calls through, or None for any other tool."""
    fn = tool.fn
    if isinstance(fn, functools.partial) and fn.func is _call_remote:
        return fn.args[0]
    return None


def require_sdk(field: str) -> None:
    """Raise `ConfigError` naming `field` and the extra to install when the `mcp` SDK is missing."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise ConfigError(f"{field}: MCP needs the `mcp` package: pip install 'orchestra[mcp]'") from None


class McpConnection:
    """One kept-open session with one MCP server, driven by a private event loop on a daemon thread.

    Public methods are thread-safe: `list_tools` blocks the caller; `call` is awaited from any event loop. State
    (`_client`, `_dead`, the reconnect allowance) is touched only on the private loop."""

    def __init__(self, config: McpServerConfig):
        self.config = config
        self.label = config.name or config.prefix.rstrip("_-") or config.url or " ".join(config.command or ())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp {self.label}", daemon=True)
        self._thread.start()
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._owners: set[asyncio.Task[None]] = set()
        """Tasks holding a session open, current or winding down after a loss; close waits for all of them."""
        self._connected_once = False
        self._reconnects_left = 1
        self._lost: str | None = None
        self._dead: str | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False
        atexit.register(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _backstop_s(self) -> float:
        """The SDK's own read timeout: later than the Toolbox's per-call limit, which reports and prices timeouts;
        it only bounds requests made outside a Toolbox."""
        return self.config.timeout_s + _STARTUP_MARGIN_S

    def list_tools(self) -> list[Any]:
        """The server's tools (`mcp.types.Tool`), every page; connects first. Raises `McpServerError`."""
        if self._closed:
            raise McpServerError(f"MCP server {self.label!r} is unavailable: its connection was closed")
        future = asyncio.run_coroutine_threadsafe(self._list_tools(), self._loop)
        try:
            return future.result(timeout=2 * self.config.connect_timeout_s + _STARTUP_MARGIN_S)  # connect, list
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpServerError(f"MCP server {self.label!r} did not list its tools within "
                                 f"{self.config.connect_timeout_s:g} s") from None

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """One `tools/call` (an `mcp.types.CallToolResult`); cancelling the caller cancels the call on the server's
        side too. Raises `McpServerError` when the server is gone."""
        if self._closed:  # the private loop no longer runs: scheduling on it would wait forever
            raise McpServerError(f"MCP server {self.label!r} is unavailable: its connection was closed")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._call(name, arguments), self._loop))

    def close(self) -> None:
        """End the session (a stdio server is stopped) and the private loop; later calls fail at once."""
        if self._closed:
            return
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with suppress(concurrent.futures.TimeoutError, RuntimeError):
            future.result(timeout=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        atexit.unregister(self.close)

    # Everything below runs on the private loop.

    async def _list_tools(self) -> list[Any]:
        client = await self._session()
        tools: list[Any] = []
        cursor = None
        while True:
            try:
                page = await asyncio.wait_for(client.list_tools(cursor=cursor), self.config.connect_timeout_s)
            except TimeoutError:
                raise McpServerError(f"MCP server {self.label!r} did not list its tools within "
                                     f"{self.config.connect_timeout_s:g} s") from None
            except Exception as exc:  # noqa: BLE001 - any failure to list is one load-time error naming the server
                raise McpServerError(f"MCP server {self.label!r} failed to list its tools: {_describe(exc)}") from None
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return tools

    async def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        client = await self._session()
        try:
            return await client.call_tool(name, arguments, read_timeout_seconds=self._backstop_s)
        except MCPError as exc:
            if exc.error.code != CONNECTION_CLOSED:
                raise McpServerError(f"MCP server {self.label!r}: the call to {name} failed: {exc}") \
                    from None
            reason = f"died during a call to {name} ({exc})"
        except _transport_errors() as exc:
            reason = f"lost its connection during a call to {name} ({_describe(exc)})"
        if self._client is client:  # a concurrent call may already have reconnected: keep the new session
            self._forget(reason)
        raise McpServerError(f"MCP server {self.label!r} {reason}")

    async def _session(self) -> Any:
        """The live client: connects on first use, reconnects once after a loss, else raises the recorded reason."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._client is not None and _transport_closed(self._client):
                self._forget("exited between calls")
            if self._client is None and self._connected_once and self._reconnects_left == 0:
                self._dead = self._dead or f"it {self._lost}, after one reconnect already"
            if self._dead is not None:
                raise McpServerError(f"MCP server {self.label!r} is unavailable: {self._dead}")
            if self._client is None:
                if self._connected_once:
                    self._reconnects_left -= 1
                try:
                    self._client = await self._connect()
                except McpServerError as exc:
                    if self._connected_once:
                        self._dead = f"it {self._lost}, and reconnecting failed: {exc}"
                    raise
                self._connected_once = True
            return self._client

    async def _connect(self) -> Any:
        ready: asyncio.Future[Any] = self._loop.create_future()
        stop = asyncio.Event()
        owner = asyncio.ensure_future(self._own(ready, stop))
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), self.config.connect_timeout_s)
        except TimeoutError:
            owner.cancel()
            raise McpServerError(f"MCP server {self.label!r} did not start within "
                                 f"{self.config.connect_timeout_s:g} s") \
                from None
        except Exception as exc:  # noqa: BLE001 - a spawn or handshake failure of any kind is one error line
            raise McpServerError(f"cannot connect to MCP server {self.label!r}: {_describe(exc)}") from None
        self._stop = stop
        self._owners.add(owner)
        owner.add_done_callback(self._owners.discard)
        return client

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Hold the client open until `stop`; its transport's task groups are entered and left in this one task."""
        try:
            async with self._new_client() as client:
                ready.set_result(client)
                await stop.wait()
        except Exception as exc:  # noqa: BLE001 - reported to the connecting call; after setup, calls see the loss
            if not ready.done():
                ready.set_exception(exc)

    def _new_client(self) -> Any:
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client

        if self.config.url is not None:
            return Client(self.config.url, read_timeout_seconds=self._backstop_s)
        command = list(self.config.command or ())
        params = StdioServerParameters(command=command[0], args=command[1:], env=dict(self.config.env) or None)
        # The server's stderr goes to ours: a crashing server's traceback is what its user needs to see.
        return Client(stdio_client(params, errlog=sys.__stderr__ or sys.stderr), read_timeout_seconds=self._backstop_s)

    def _forget(self, reason: str) -> None:
        """Drop the current client after a loss; its owner task stops it (and the stdio process) in the background."""
        self._lost = reason
        self._client = None
        if self._stop is not None:
            self._stop.set()
        self._stop = None

    async def _shutdown(self) -> None:
        self._client = None
        if self._stop is not None:
            self._stop.set()
        if self._owners:  # each stops its transport (and a stdio server) within the SDK's bounded shutdown
            await asyncio.wait(set(self._owners), timeout=8.0)


def render_result(result: Any) -> str:
    """The observation text of a `CallToolResult`: text blocks as they are, other blocks summarized on one line,
    structured content as JSON when there is no content at all."""
    import json

    parts = [_render_block(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts)


def _render_block(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind}: {block.mime_type}, {_b64_bytes(block.data)} bytes]"
    if kind == "resource_link":
        mime = f", {block.mime_type}" if block.mime_type else ""
        return f"[resource link: {block.name} <{block.uri}>{mime}]"
    if kind == "resource":
        res = block.resource
        mime = f", {res.mime_type}" if res.mime_type else ""
        text = getattr(res, "text", None)
        if text is not None:
            return f"[resource <{res.uri}>{mime}]\n{text}"
        return f"[resource <{res.uri}>{mime}, {_b64_bytes(res.blob)} bytes]"
    return f"[{kind or type(block).__name__} content]"


def _b64_bytes(data: str) -> int:
    """Decoded size of base64 text, without decoding it."""
    stripped = data.rstrip("=")
    return len(stripped) * 3 // 4


def _wrap(connection: McpConnection, remote: Any, card: CostCard) -> Tool:
    config = connection.config
    schema = dict(remote.input_schema or {"type": "object", "properties": {}})
    spec = ToolSpec(name=config.prefix + remote.name, description=remote.description or remote.title or remote.name,
                    parameters=schema, kind="basic", cost=card, provider=f"mcp:{connection.label}")
    # A partial, not a closure, so `connection_of` can find the connection behind the tool.
    call = functools.partial(_call_remote, connection, remote.name)
    return Tool.from_schema(spec, call, timeout_s=config.timeout_s)


async def _call_remote(connection: McpConnection, remote_name: str, /, **arguments: Any) -> ToolOutput:
    """One call of an imported tool (positional-only first: a remote argument may be named `connection`)."""
    result = await connection.call(remote_name, arguments)
    return ToolOutput(content=render_result(result), is_error=bool(result.is_error))


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the connection itself failed (not the tool): pipes, sockets, HTTP transport."""
    import anyio
    import httpx2

    return (OSError, anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, httpx2.TransportError)


def _transport_closed(client: Any) -> bool:
    """Whether the session already saw its transport end (an idle stdio server that exited). Reads the SDK's
    dispatcher state; if a future SDK renames it, the loss is found by the next call instead, which then fails."""
    dispatcher = getattr(getattr(client, "session", None), "_dispatcher", None)
    return bool(getattr(dispatcher, "_closed", False))


def _describe(exc: BaseException) -> str:
    """One line for an exception, unwrapping the exception groups anyio raises around a single cause."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
