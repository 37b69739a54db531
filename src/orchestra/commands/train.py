"""`orchestra train sft|grpo --config FILE --set key=value`: the training faces, with rich progress."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestra.config import load_config

app = typer.Typer(no_args_is_help=True)
T = TypeVar("T")
M = TypeVar("M")

ConfigOption = Annotated[Path | None, typer.Option("--config", help="Config YAML (default: built-in defaults).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Dotted override, e.g. steps=20.")]


def main_process_console() -> Console:
    """The console of this process: silent in every process but the first of an `accelerate launch` (RANK 0), so a
    run on N processes prints one progress bar and one result line, not N."""
    return Console(quiet=os.environ.get("RANK", "0") != "0")


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


def with_progress(console: Console, name: str, total: int | None, info: str,
                  train: Callable[[Callable[[int, int, dict[str, float]], None]], T]) -> T:
    """Run `train(on_step)` under a progress bar that shows each step's metrics."""
    with progress_bar(console) as progress:
        bar = progress.add_task(name, total=total, info=info)

        def on_step(step: int, steps: int, values: dict[str, float]) -> None:
            progress.update(bar, completed=step, total=steps, info=describe_step(values))

        return train(on_step)


def _load(console: Console, path: Path | None, model: type[M], overrides: list[str] | None) -> M:
    """The config; a ConfigError goes to the CLI's one-line error handler."""
    return load_config(path, model, tuple(overrides or ()))


@app.command("sft")
def sft(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Supervised warm start on demonstrations."""
    from orchestra.train.config import SFTConfig
    from orchestra.train.sft import train_sft

    console = main_process_console()
    cfg = _load(console, config, SFTConfig, set_)
    result = with_progress(console, "sft", None, "collecting demonstrations, loading the model",
                           lambda on_step: train_sft(cfg, on_step=on_step))
    console.print(f"saved {result.output_dir} after {result.steps} steps (final loss {result.final_loss:.4f}, "
                  f"{result.demonstrations} demonstrations)")


@app.command("grpo")
def grpo(config: ConfigOption = None, set_: SetOption = None) -> None:
    """GRPO with the paper's reward on multi-turn rollouts (TRL's GRPOTrainer)."""
    from orchestra.train.config import GRPOConfig
    from orchestra.train.grpo_trl import train_grpo

    console = main_process_console()
    cfg = _load(console, config, GRPOConfig, set_)
    result = with_progress(console, "grpo", cfg.steps, "loading the model",
                           lambda on_step: train_grpo(cfg, on_step=on_step))
    console.print(f"saved {result.output_dir} after {result.steps} steps")
