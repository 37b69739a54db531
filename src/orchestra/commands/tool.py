"""`orchestra tool call NAME 'JSON'`: run one tool of a pool directly and print its observation as JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from orchestra.errors import ConfigError
from orchestra.pool import Pool, build_pool, load_pool_config
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Observation, ToolCall

app = typer.Typer(no_args_is_help=True)


@app.command("call")
def call(
    name: Annotated[str, typer.Argument(help="Tool name as the orchestrator sees it.")],
    arguments: Annotated[str, typer.Argument(help="Arguments as a JSON object.")] = "{}",
    pool: Annotated[Path | None, typer.Option("--pool", help="Pool YAML (default: the bundled pool).")] = None,
) -> None:
    """Validate and run one call exactly as an episode would; exit 1 if the observation is an error."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON ({exc.msg} at character {exc.pos}): give a JSON object, e.g. "
                                 "'{\"expression\": \"2 + 2\"}'", param_hint="ARGUMENTS") from None
    built = build_pool(load_pool_config(pool))
    request = ToolCall("cli", name, parsed if isinstance(parsed, dict) else {},
                       error=None if isinstance(parsed, dict) else "arguments must be a JSON object")
    observation = asyncio.run(_call_once(built, request))
    if observation.status == "tool_error" and observation.content.startswith("error: ConfigError: "):
        # The tool is set up wrong (e.g. its API key is not set): one line, like every user error.
        raise ConfigError(observation.content.removeprefix("error: ConfigError: "))
    typer.echo(json.dumps(dataclasses.asdict(observation), indent=2))
    if observation.is_error:
        raise typer.Exit(1)


async def _call_once(built: Pool, request: ToolCall) -> Observation:
    """The one call, then the pool closed (its HTTP connections, its MCP servers)."""
    try:
        return await Toolbox.of(built.tools).call(request)
    finally:
        await built.aclose()


@app.command("list")
def list_tools(
    pool: Annotated[Path | None, typer.Option("--pool", help="Pool YAML (default: the bundled pool).")] = None,
) -> None:
    """Print every tool's OpenAI schema (with its price and latency in the description)."""
    built = build_pool(load_pool_config(pool))
    typer.echo(json.dumps([t.spec.to_openai() for t in built.tools], indent=2))
