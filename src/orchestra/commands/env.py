"""`orchestra env check NAME [--data PATH]` and `orchestra env list`: environments through the registry."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="Environment: tau (golden actions), or any that has a check.")],
    data: Annotated[str | None, typer.Option("--data", "--domain", help="Data file or folder (tau: the domain "
                                                                       "folder with db, policy and tasks).")] = None,
    env_set: Annotated[list[str] | None, typer.Option("--env-set", help="Environment field KEY=VALUE.")] = None,
) -> None:
    """Check an environment's data: for τ² domains, replay every task's golden actions on a fresh database and
    report the ones that fail.

    Exits 1 only when a task cannot even start; golden actions that fail on purpose (a customer's mistake the agent
    is expected to see refused) are listed but do not fail the check.
    """
    from orchestra.envs.registry import load_suite
    from orchestra.errors import ConfigError
    from orchestra.evaluate.commands import env_options

    try:
        suite = load_suite(env_options(name, data=data, extra=env_set or []))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if suite.check is None:
        typer.echo(f"error: {name} has no data check", err=True)
        raise typer.Exit(2)
    text, ok = suite.check()
    typer.echo(text)
    if not ok:
        raise typer.Exit(1)


@app.command("list")
def list_environments() -> None:
    """The environments `orchestra eval` and `orchestra train` can name."""
    from orchestra.envs.registry import describe, names

    for name in names():
        typer.echo(f"{name:12s} {describe(name)}")
