"""`orchestra env check tau --domain DIR` and `orchestra env list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("check")
def check(
    kind: Annotated[str, typer.Argument(help="Environment kind: tau.")],
    domain: Annotated[Path, typer.Option("--domain", help="Domain folder (db, policy, tasks).")],
) -> None:
    """Replay every task's golden actions on a fresh database and report the ones that fail.

    Exits 1 only when a task cannot even start; golden actions that fail on purpose (a customer's mistake the agent
    is expected to see refused) are listed but do not fail the check.
    """
    if kind != "tau":
        raise typer.BadParameter("only `tau` domains have golden actions to check")
    from orchestra.envs.tau.env import check_domain

    report = check_domain(domain)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


@app.command("list")
def list_environments() -> None:
    """The environments `orchestra eval` and `orchestra train` can name."""
    typer.echo("routerbench  recorded outcomes of 11 LLMs (ask a model, see its recorded answer, pay its cost)")
    typer.echo("tau          τ²-format domains (retail, telecom, mock): domain tools, golden-action grading")
    typer.echo("qa           question answering in the HLE and FRAMES formats (exact, numeric, choice, judge)")
