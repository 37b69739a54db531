"""`orchestra mcp serve`: expose a pool's tools (built-ins, experts, search, code interpreter, imported MCP tools) as
an MCP server, so any MCP client can list them with their prices and call them through orchestra's Toolbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("serve")
def serve(
    pool: Annotated[Path | None, typer.Option("--pool", help="Pool YAML (default: the bundled pool).")] = None,
    transport: Annotated[Literal["stdio", "http"], typer.Option(
        "--transport", help="stdio: speak MCP on stdin/stdout (for a client that launches this command); "
        "http: streamable HTTP at http://HOST:PORT/mcp.")] = "stdio",
    port: Annotated[int, typer.Option("--port", help="TCP port (http).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind (http; default: this machine only).")]
    = "127.0.0.1",
) -> None:
    """Serve the pool's tools over MCP; calls are validated, run and priced exactly as in an episode."""
    from orchestra.pool import build_pool, load_pool_config
    from orchestra.tools.mcp import require_sdk
    from orchestra.tools.mcp_server import serve_http, serve_stdio
    from orchestra.tools.toolbox import Toolbox

    require_sdk("orchestra mcp serve")
    built = build_pool(load_pool_config(pool))
    toolbox = Toolbox.of(built.tools).restricted(banned_tools=built.limits.banned_tools,
                                                  banned_providers=built.limits.banned_providers)
    if transport == "stdio":
        serve_stdio(toolbox)
    else:
        typer.echo(f"serving {len(toolbox.specs())} tools over MCP at http://{host}:{port}/mcp", err=True)
        serve_http(toolbox, host=host, port=port)
