"""`orchestra train sft|grpo --config FILE --set key=value`: the training faces, with rich progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestra.config import load_config
from orchestra.errors import ConfigError

app = typer.Typer(no_args_is_help=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="Config YAML (default: built-in defaults).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Dotted override, e.g. steps=20.")]


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)


def describe_step(values: dict[str, float]) -> str:
    parts = []
    for key in ("loss", "reward", "accuracy", "cost_usd", "kept_groups"):
        if key in values:
            parts.append(f"{key}={values[key]:.4g}")
    shares = [f"{k.removeprefix('share/')}:{v:.0%}" for k, v in values.items() if k.startswith("share/")]
    return " ".join(parts + shares[:3])


@app.command("sft")
def sft(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Supervised warm start on demonstrations."""
    from orchestra.train.config import SFTConfig
    from orchestra.train.sft import train_sft

    console = Console()
    try:
        cfg = load_config(config, SFTConfig, tuple(set_ or ()))
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    with progress_bar(console) as progress:
        bar = progress.add_task("sft", total=None, info="collecting demonstrations, loading the model")

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            progress.update(bar, completed=step, total=total, info=describe_step(values))

        result = train_sft(cfg, on_step=on_step)
    console.print(f"saved {result.output_dir} after {result.steps} steps (final loss {result.final_loss:.4f}, "
                  f"{result.demonstrations} demonstrations)")


@app.command("grpo")
def grpo(config: ConfigOption = None, set_: SetOption = None) -> None:
    """GRPO with the paper's reward on multi-turn rollouts (TRL's GRPOTrainer)."""
    from orchestra.train.config import GRPOConfig
    from orchestra.train.grpo_trl import train_grpo

    console = Console()
    try:
        cfg = load_config(config, GRPOConfig, tuple(set_ or ()))
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {exc}")
        raise typer.Exit(2) from None
    with progress_bar(console) as progress:
        bar = progress.add_task("grpo", total=cfg.steps, info="loading the model")

        def on_step(step: int, total: int, values: dict[str, float]) -> None:
            progress.update(bar, completed=step, total=total, info=describe_step(values))

        result = train_grpo(cfg, on_step=on_step)
    console.print(f"saved {result.output_dir} after {result.steps} steps")
