"""MCP export: a Toolbox's tools served as an MCP server (stdio or streamable HTTP), for any MCP client.

Invariants
- Lossless listing: each tool's name and JSON schema are sent unchanged; its description is the one the orchestrator
  sees (with price and latency rendered in), and the cost card, kind and provider travel in the tool's `_meta` under
  `orchestra/...` keys so a client can read the prices as numbers.
- Every call goes through `Toolbox.call`: unknown tools, schema violations, denied tools, timeouts and tool failures
  come back as an `isError` result whose text is the observation the orchestrator would have read; nothing raises
  into the SDK. Each result's `_meta` carries the call's `orchestra/cost_usd`, `orchestra/latency_s` and status.
- HTTP binds 127.0.0.1 unless told otherwise; the SDK's DNS-rebinding protection is on for local hosts.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall

META_PREFIX = "orchestra/"


def mcp_server(toolbox: Toolbox, *, name: str = "orchestra") -> Any:
    """A low-level `mcp.server.Server` listing the toolbox's tools and calling them through the toolbox."""
    import mcp_types as types
    from mcp.server import Server

    ids = itertools.count()

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=[
            types.Tool(
                name=spec.name,
                description=spec.rendered_description(),
                input_schema=spec.parameters,
                _meta={f"{META_PREFIX}cost": dataclasses.asdict(spec.cost), f"{META_PREFIX}kind": spec.kind,
                       f"{META_PREFIX}provider": spec.provider},
            )
            for spec in toolbox.specs()
        ])

    async def call_tool(ctx: Any, params: Any) -> Any:
        call = ToolCall(f"mcp_{next(ids)}", params.name, dict(params.arguments or {}))
        observation = await toolbox.call(call, task_id="mcp")
        return types.CallToolResult(
            content=[types.TextContent(text=observation.content)],
            is_error=observation.is_error,
            _meta={f"{META_PREFIX}cost_usd": observation.cost_usd, f"{META_PREFIX}latency_s": observation.latency_s,
                   f"{META_PREFIX}status": observation.status},
        )

    def input_schema(tool_name: str) -> dict[str, Any] | None:
        found = toolbox.get(tool_name)
        return found.spec.parameters if found is not None else None

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool, get_tool_input_schema=input_schema)


def serve_stdio(toolbox: Toolbox) -> None:
    """Serve on this process's stdin/stdout until the client closes it (stdout then carries protocol only)."""
    import anyio
    from mcp.server.stdio import stdio_server

    server = mcp_server(toolbox)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)


def serve_http(toolbox: Toolbox, *, host: str = "127.0.0.1", port: int = 8765, path: str = "/mcp") -> None:
    """Serve streamable HTTP at http://HOST:PORT/PATH until interrupted."""
    import uvicorn

    app = mcp_server(toolbox).streamable_http_app(streamable_http_path=path, host=host)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
