"""The `orchestra` command line: a thin face over the library.

Each command lives in the module that owns its concern and is registered here through one explicit table
(`COMMANDS`) of lazy imports, so `orchestra --help` stays fast and importing the CLI never imports torch.

Errors: one handler for every command (`_OrchestraGroup.main`). A user error (a `ConfigError`, a bad parameter or
option, a file that is missing, unreadable or a directory) is one line on stderr naming the input and the fix, exit
status 2. Any other failure is one line naming the exception, exit 1. A traceback is printed only with the global
`--debug` option. Messages are written as plain text, never parsed as rich markup, so text like `[/red]` in a file
name or an error prints as it is. Commands report a failed run with their own exit status (`run`: 1 unless the
episode answered).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer vendors its own copy of click; its commands raise that copy's exceptions
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # a typer that uses click itself
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment]

from orchestra import __version__
from orchestra.errors import ConfigError

# Library progress bars and deprecation chatter would drown the CLI's own progress display.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="trl")

class _OrchestraGroup(TyperGroup):
    """The root command: runs the requested command and turns whatever escapes it into one line and an exit status."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv[: next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))]
        try:
            result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except typer.Abort:
            code = _fail("aborted", 130)
        except NoArgsIsHelpError as exc:  # a bare group: its help is the answer (rich may have printed it already)
            help_text = exc.format_message().strip()
            if help_text:
                sys.stdout.write(help_text + "\n")
            code = 2
        except UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else "orchestra: "
            code = _fail(f"{where}{exc.format_message()} (see --help)", 2, debug)
        except ClickException as exc:
            code = _fail(f"error: {exc.format_message()}", exc.exit_code, debug)
        except ConfigError as exc:
            code = _fail(f"error: {exc}", 2, debug)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            code = _fail(f"error: {exc.strerror or type(exc).__name__}: {exc.filename}: check the path", 2, debug)
        except Exception as exc:  # noqa: BLE001 - the one place every failure is reported; --debug shows it whole
            code = _fail(f"error: {type(exc).__name__}: {exc} (run `orchestra --debug ...` for the traceback)", 1,
                         debug)
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int, debug: bool = False) -> int:
    """Write `message` as one plain line on stderr (after the traceback when debugging); the exit status."""
    if debug:
        traceback.print_exc(file=sys.stderr)
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    sys.stderr.write(one_line + "\n")
    sys.stderr.flush()
    return code


app = typer.Typer(
    name="orchestra",
    help="Run, train and evaluate small orchestrator models over pools of tools and LLMs.",
    no_args_is_help=True,
    add_completion=False,
    cls=_OrchestraGroup,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"orchestra {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Print full tracebacks for errors (before the command)."),
) -> None:
    """Run, train and evaluate small orchestrator models over pools of tools and LLMs."""

# command name -> (module, function name, help). Sub-apps (groups of commands) are listed in GROUPS.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("orchestra.commands.run", "run", "Run the orchestrator on one question and print the answer and its cost."),
    "show-config": ("orchestra.commands.run", "show_config", "Print a resolved config file."),
    "eval": ("orchestra.evaluate.commands", "eval_command", "Evaluate an orchestrator or baseline on an environment."),
    "report": ("orchestra.evaluate.commands", "report_command", "Write Markdown and HTML reports for result runs."),
    "compare": ("orchestra.evaluate.commands", "compare_command",
                "Paired comparison of runs on the same items: wins/losses, McNemar p, bootstrap intervals."),
    "routes": ("orchestra.evaluate.commands", "routes_command",
               "The calls a run made, as routes counted per task type: items, solved, cost."),
    "demo": ("orchestra.commands.demo", "demo", "Train and evaluate an orchestrator end to end on RouterBench."),
    "demo-generalize": ("orchestra.commands.demo_generalize", "demo_generalize",
                        "Evaluate the demo's orchestrator under unseen prices and each avoid-provider instruction."),
    "demo-seeds": ("orchestra.commands.demo_seeds", "demo_seeds",
                   "Run the demo over several training seeds: untrained vs SFT vs SFT+GRPO with their spread."),
    "demo-tools": ("orchestra.commands.demo_tools", "demo_tools",
                   "Train and evaluate multi-turn tool use on synthesized ToolScale domains (held-out domains)."),
    "serve": ("orchestra.commands.serve", "serve", "Serve the orchestrator behind an OpenAI-compatible API."),
    "serve-model": ("orchestra.commands.serve", "serve_model", "Serve a local model behind an OpenAI-compatible API."),
    "export": ("orchestra.commands.export", "export", "Export a run folder's items and tool calls to Parquet."),
    "view": ("orchestra.commands.view", "view", "Browse a run folder's episodes in the trajectory viewer."),
    "describe": ("orchestra.commands.describe", "describe",
                 "Write a model's capability description from its trajectories on sampled tasks."),
}
GROUPS: dict[str, tuple[str, str, str]] = {
    "tool": ("orchestra.commands.tool", "app", "Call one tool of a pool directly."),
    "env": ("orchestra.commands.env", "app", "Inspect and check environments."),
    "train": ("orchestra.commands.train", "app", "Train an orchestrator (SFT, GRPO)."),
    "synth": ("orchestra.commands.synth", "app", "Synthesize τ²-format domains and tasks; export them."),
    "index": ("orchestra.commands.index", "app", "Build, serve and query local search indexes."),
    "mcp": ("orchestra.commands.mcp", "app", "Serve a pool's tools over MCP (stdio or streamable HTTP)."),
}


def _load(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _load_or_broken(command: str, module: str, name: str, *, group: bool) -> Any:
    """The command's function (or sub-app); a module that fails to import gives a stand-in that raises its error
    when the command is run, so one broken command cannot take `--help` and every other command down with it."""
    try:
        return _load(module, name)
    except Exception as exc:  # noqa: BLE001 - re-raised when the command is used, through the one handler
        error = exc

    def broken() -> None:
        raise RuntimeError(f"the `{command}` command cannot be loaded ({module}): {type(error).__name__}: {error}") \
            from error

    broken.__name__ = command.replace("-", "_")
    if not group:
        return broken
    sub = typer.Typer()
    sub.callback(invoke_without_command=True)(broken)
    return sub


def _register() -> None:
    """Import only the module of the command being run (all of them for `--help`): a command's module must not
    import torch at module level, and a missing or broken one fails loudly."""
    import sys

    requested = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    known = requested in COMMANDS or requested in GROUPS or (requested is None and "--version" in sys.argv)
    for command, (module, name, help_text) in COMMANDS.items():
        fn = _load_or_broken(command, module, name, group=False) if (not known or requested == command) \
            else _placeholder(command)
        app.command(command, help=help_text)(fn)
    for group, (module, name, help_text) in GROUPS.items():
        sub = _load_or_broken(group, module, name, group=True) if (not known or requested == group) else typer.Typer()
        app.add_typer(sub, name=group, help=help_text)


def _placeholder(command: str) -> Callable[[], None]:
    def placeholder() -> None:  # listed in --help only; the real command is registered when it is named
        raise typer.Exit(2)

    placeholder.__name__ = command.replace("-", "_")
    return placeholder


_register()
