"""`orchestra run`: one question through a pool, printing the answer and a cost/latency/call breakdown.

Exit status: 0 when the episode answered (a final message or an answer tool), 1 when it ended otherwise (an
endpoint error, the context, the budget or the turn cap), 2 for a bad input (reported by the CLI's one handler).
With `--json` stdout carries only the JSON summary; progress and errors go to stderr. Text from the model, tools
and files is printed literally, never read as rich markup.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestra.backends.pricing import PriceTable
from orchestra.config import PoolConfig, PricesConfig, dump_config, load_config
from orchestra.pool import Pool, build_pool, default_pool_path, load_pool_config
from orchestra.rollout.budget import Budget
from orchestra.rollout.episode import run_episode
from orchestra.task import Task
from orchestra.tools.toolbox import Toolbox
from orchestra.trajectory import append_trajectory
from orchestra.types import Termination, Trajectory

DEFAULT_QUESTION = "A train travels 120 km in 1.5 hours. What is its average speed in km/h?"

PoolOption = Annotated[Path | None, typer.Option("--pool", help="Pool YAML (default: the bundled offline pool).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Dotted override, e.g. limits.max_turns=4.")]


def run(
    question: Annotated[str, typer.Argument(help="The task for the orchestrator.")] = DEFAULT_QUESTION,
    pool: PoolOption = None,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trajectory summary as JSON.")] = False,
    save: Annotated[Path | None, typer.Option("--save", help="Append the whole trajectory to this JSONL file.")] = None,
    prices: Annotated[Path | None, typer.Option(
        "--prices", help="Price YAML laid over the packaged table ({models: {NAME: {input, output}}, tools: ...}).")
    ] = None,
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", min=0, help="Hard dollar cap for the whole run: orchestrator and every paid tool call.")
    ] = None,
) -> None:
    """Exit 0 when the episode answered, 1 when it ended without an answer (error, context, budget, turn cap)."""
    console = Console(stderr=as_json)  # with --json, stdout carries the JSON alone
    config = load_pool_config(pool, tuple(set_ or ()))
    table = PriceTable.default().with_overrides(load_config(prices, PricesConfig)) if prices is not None else None
    with console.status("loading the pool (the bundled model takes ~10 s the first time)"):
        built = build_pool(config, prices=table)
    task = Task(id="cli", prompt=question)
    budget = Budget(budget_usd) if budget_usd is not None else None
    with console.status("running the episode"):
        trajectory = asyncio.run(_episode(built, task, budget))
    if save is not None:
        append_trajectory(save, trajectory)
    spend = None if budget is None else {"limit_usd": budget.limit_usd, "spent_usd": budget.spent_usd,
                                         "disputed_usd": budget.disputed_usd}
    if as_json:
        typer.echo(json.dumps({**summary(trajectory), **({"budget": spend} if spend else {})}))
    else:
        print_breakdown(console, trajectory)
        if spend:
            console.print(escape(f"budget: ${spend['spent_usd']:.6f} of ${spend['limit_usd']:.6f} spent"
                                 + (f"; ${spend['disputed_usd']:.6f} reported beyond reservations (disputed)"
                                    if spend["disputed_usd"] else "")))
    if trajectory.termination not in (Termination.FINAL_MESSAGE, Termination.ANSWERED):
        if not as_json:
            typer.echo(f"the run ended without an answer: {trajectory.termination.value}", err=True)
        raise typer.Exit(1)


async def _episode(built: Pool, task: Task, budget: Budget | None) -> Trajectory:
    """One episode over the pool, which is closed afterwards (its HTTP connections, its MCP servers)."""
    try:
        return await run_episode(
            task, built.orchestrator, Toolbox.of(built.tools), preferences=built.preferences,
            limits=built.limits, sampling=built.sampling, budget=budget, build_prompt=built.build_prompt,
            render_observation=built.render_observation,
        )
    finally:
        await built.aclose()


def summary(trajectory: Trajectory) -> dict[str, object]:
    return {
        "answer": trajectory.final_answer,
        "termination": trajectory.termination.value,
        "turns": len(trajectory.turns),
        "cost_usd": trajectory.cost_usd,
        "orchestrator_cost_usd": trajectory.orchestrator_cost_usd,
        "latency_s": trajectory.latency_s,
        "calls": dict(trajectory.tool_counts()),
        "format_errors": trajectory.format_errors,
        "error": trajectory.error,
    }


def print_breakdown(console: Console, trajectory: Trajectory) -> None:
    """The answer and a table of calls; every text from the model, tools or errors is escaped (printed literally)."""
    answer = trajectory.final_answer if trajectory.final_answer is not None else "-"
    console.print(f"[bold]answer:[/bold] {escape(answer)}")
    console.print(escape(f"termination: {trajectory.termination.value}; turns: {len(trajectory.turns)}; "
                         f"format errors: {trajectory.format_errors}"
                         + (f"; error: {trajectory.error}" if trajectory.error else "")))
    table = Table(title="calls")
    for column in ("turn", "who", "status", "cost $", "latency s"):
        table.add_column(column)
    for turn in trajectory.turns:
        c = turn.completion
        table.add_row(str(turn.index), escape(f"orchestrator ({c.model})"), escape(c.finish_reason),
                      f"{c.cost_usd:.6f}", f"{c.latency_s:.2f}")
        for o in turn.observations:
            who = o.name + (f"({o.target})" if o.target else "")
            table.add_row("", escape(who), escape(o.status), f"{o.cost_usd:.6f}", f"{o.latency_s:.2f}")
    console.print(table)
    console.print(f"total: ${trajectory.cost_usd:.6f} (orchestrator ${trajectory.orchestrator_cost_usd:.6f}, "
                  f"tools ${trajectory.tool_cost_usd:.6f}); {trajectory.latency_s:.2f} s")


def show_config(
    path: Annotated[Path | None, typer.Argument(help="Config YAML (default: the bundled pool).")] = None,
    kind: Annotated[str, typer.Option(help="Which config tree: pool, sft, grpo.")] = "pool",
    set_: SetOption = None,
) -> None:
    """Print a config file resolved against its schema, defaults filled and overrides applied."""
    from orchestra.train.config import GRPOConfig, SFTConfig

    trees = {"pool": PoolConfig, "sft": SFTConfig, "grpo": GRPOConfig}
    if kind not in trees:
        raise typer.BadParameter(f"must be one of {', '.join(trees)}", param_hint="--kind")
    if kind == "pool":
        config = load_config(path or default_pool_path(), PoolConfig, tuple(set_ or ()))
    else:
        config = load_config(path, trees[kind], tuple(set_ or ()))
    typer.echo(dump_config(config))
