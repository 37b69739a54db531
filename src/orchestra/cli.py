"""The `orchestra` command line: a thin face over the library.

Each command lives in the module that owns its concern and is registered here through one explicit table
(`COMMANDS`) of lazy imports, so `orchestra --help` stays fast and importing the CLI never imports torch.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from typing import Any

import typer

# Library progress bars and deprecation chatter would drown the CLI's own progress display.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="trl")

app = typer.Typer(
    name="orchestra",
    help="Run, train and evaluate small orchestrator models over pools of tools and LLMs.",
    no_args_is_help=True,
    add_completion=False,
)

# command name -> (module, function name, help). Sub-apps (groups of commands) are listed in GROUPS.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("orchestra.commands.run", "run", "Run the orchestrator on one question and print the answer and its cost."),
    "show-config": ("orchestra.commands.run", "show_config", "Print a resolved config file."),
    "eval": ("orchestra.evaluate.commands", "eval_command", "Evaluate an orchestrator or baseline on an environment."),
    "report": ("orchestra.evaluate.commands", "report_command", "Write Markdown and HTML reports for result runs."),
    "demo": ("orchestra.commands.demo", "demo", "Train and evaluate an orchestrator end to end on RouterBench."),
    "serve": ("orchestra.commands.serve", "serve", "Serve the orchestrator behind an OpenAI-compatible API."),
}
GROUPS: dict[str, tuple[str, str, str]] = {
    "tool": ("orchestra.commands.tool", "app", "Call one tool of a pool directly."),
    "env": ("orchestra.commands.env", "app", "Inspect and check environments."),
    "train": ("orchestra.commands.train", "app", "Train an orchestrator (SFT, GRPO)."),
    "index": ("orchestra.commands.index", "app", "Build, serve and query local search indexes."),
}


def _load(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _register() -> None:
    """Import only the module of the command being run (all of them for `--help`): a command's module must not
    import torch at module level, and a missing or broken one fails loudly."""
    import sys

    requested = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    known = requested in COMMANDS or requested in GROUPS
    for command, (module, name, help_text) in COMMANDS.items():
        fn = _load(module, name) if (not known or requested == command) else _placeholder(command)
        app.command(command, help=help_text)(fn)
    for group, (module, name, help_text) in GROUPS.items():
        sub = _load(module, name) if (not known or requested == group) else typer.Typer()
        app.add_typer(sub, name=group, help=help_text)


def _placeholder(command: str) -> Callable[[], None]:
    def placeholder() -> None:  # listed in --help only; the real command is registered when it is named
        raise typer.Exit(2)

    placeholder.__name__ = command.replace("-", "_")
    return placeholder


_register()
