"""`orchestra eval` and `orchestra report`: thin faces over `evaluate` and `write_report`.

Environments are named through `orchestra.envs.registry`. `eval` turns its flags into an `EvalConfig` (validated
before anything loads), runs each orchestrator spec into `<out>/<spec slug>` (resumable; see
`orchestra.evaluate.store`) with a live progress bar (accuracy and spend so far) and prints a summary table. The
generic flags `--data`, `--part`, `--dev-fraction` and `--seed` fill the environment's config fields of those names
(`--data` is a τ² domain's `path`); `--env-set key=value` sets any other field.

RouterBench replays recorded costs: `--prices` reprices what is priced by the table (a prompted or served
orchestrator's own tokens, pool models), not the recorded answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from orchestra.backends.base import Sampling
from orchestra.backends.pricing import PriceTable
from orchestra.envs.base import Environment
from orchestra.errors import ConfigError
from orchestra.preferences import Limits, Preferences, avoiding
from orchestra.task import Task


def avoid_preferences(models: Sequence[str], all_models: Sequence[str]) -> Preferences:
    """Avoid `models`: weight 0 for them, 1 for every other model, and an instruction saying so."""
    avoided = [m.strip() for m in models if m.strip()]
    unknown = [m for m in avoided if all_models and m not in all_models]
    if unknown:
        raise ConfigError(f"--prefer-avoid: unknown models {unknown}; models: {', '.join(all_models)}")
    instruction = f"User preference: do not use {', '.join(avoided)}; neither ask them nor answer with them."
    return avoiding(avoided, all_models or avoided, instruction)


def load_preferences(path: str | Path) -> Preferences:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--preferences {path}: unreadable ({exc})") from None
    allowed = {"tool_weights", "outcome", "cost", "latency", "instruction"}
    if not isinstance(data, dict) or set(data) - allowed:
        raise ConfigError(f"--preferences {path}: a mapping with keys among {sorted(allowed)}")
    return Preferences(dict(data.get("tool_weights") or {}), float(data.get("outcome", 1.0)),
                       float(data.get("cost", 0.0)), float(data.get("latency", 0.0)), str(data.get("instruction", "")))


def load_prices(path: str | None) -> tuple[PriceTable, dict[str, Any]]:
    """The price table with a `--prices` file's `models`/`tools` overrides; its `recorded:` section (new prices for
    recorded answers) is left in the returned info for `recorded_prices`."""
    table = PriceTable.default()
    if not path:
        return table, {"version": table.version}
    try:
        text = Path(path).read_text()
        overrides = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--prices {path}: unreadable ({type(exc).__name__}: {exc}); give a YAML file with "
                          "`models` and/or `tools`") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"--prices {path}: expected a mapping with `models`, `tools` and/or `recorded`")
    recorded = overrides.pop("recorded", None)
    table = table.with_overrides(overrides)
    info = {"version": table.version, "overrides": str(path),
            "overrides_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    if recorded is not None:
        info["recorded"] = recorded
    return table, info


def slug(spec: str, parts: int = 1) -> str:
    """A folder name for `spec`: its last `parts` path components (the whole spec for an endpoint URL)."""
    name = spec if "://" in spec else "/".join(spec.rstrip("/").split("/")[-parts:])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def run_names(specs: Sequence[str]) -> dict[str, str]:
    """The run folder name of each spec: its slug, lengthened by parent path components for specs whose slugs
    collide (every trained checkpoint folder is called `orchestrator`: `runs/a/orchestrator` and
    `runs/b/orchestrator` become `a_orchestrator` and `b_orchestrator`)."""
    names = {spec: slug(spec) for spec in specs}
    for parts in range(2, 16):
        taken = list(names.values())
        clashing = {spec for spec, name in names.items() if taken.count(name) > 1}
        if not clashing:
            break
        names.update({spec: slug(spec, parts) for spec in clashing})
    return names


def eval_command(
    env: Annotated[str, typer.Argument(help="Environment: routerbench, qa or tau (see `orchestra env list`).")],
    orchestrator: Annotated[list[str], typer.Option("--orchestrator", "-o", help="Spec (repeatable): the "
                            "environment's baselines (routerbench: always:<model>, cheapest, random, oracle, "
                            "cascade[:m1,m2,...], knn[:lambda], teacher[:m1,m2,...]), prompted:<model>, "
                            "prompted:local, a checkpoint folder, or an http(s):// endpoint.")],
    data: Annotated[str | None, typer.Option(help="Data file or folder (default: the shared data).")] = None,
    out: Annotated[Path, typer.Option(help="Parent folder; each spec runs in OUT/<spec slug>.")] = Path("runs"),
    part: Annotated[str | None, typer.Option(help="train, dev or all (qa: all, dev, test, START:STOP; tau: a "
                                                  "split of split_tasks.json).")] = None,
    dev_fraction: Annotated[float | None, typer.Option(help="Share of the data held apart as dev.")] = None,
    env_set: Annotated[list[str] | None, typer.Option("--env-set", help="Environment field KEY=VALUE "
                                                                       "(repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the dev split and of random baselines.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N tasks only.")] = None,
    trials: Annotated[int, typer.Option(help="Trials per task (pass^k when > 1).")] = 1,
    concurrency: Annotated[int, typer.Option(help="Episodes in flight.")] = 8,
    prices: Annotated[str | None, typer.Option(help="Price overrides YAML (unseen-pricing evaluation).")] = None,
    prefer_avoid: Annotated[str | None, typer.Option(help="Comma-separated models to avoid (routerbench).")] = None,
    preferences: Annotated[str | None, typer.Option(help="Preferences YAML.")] = None,
    base_run: Annotated[Path | None, typer.Option(help="Run without preferences, for the preference score.")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool YAML (prompted:<model>, and tools for qa/tau).")] = None,
    local_model: Annotated[str | None, typer.Option(help="Model folder for prompted:local.")] = None,
    endpoint_model: Annotated[str | None, typer.Option(help="Model name served at an http(s) spec.")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Env var holding the endpoint's key.")] = None,
    max_turns: Annotated[int, typer.Option(help="Turn cap per episode.")] = 10,
    budget_usd: Annotated[float | None, typer.Option(help="Dollar cap per episode.")] = None,
    run_budget_usd: Annotated[float | None, typer.Option(
        help="Dollar cap shared by every episode this command runs (all specs); items already stored by an earlier "
             "run are not paid again and do not count.")] = None,
    temperature: Annotated[float, typer.Option(help="Orchestrator sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Orchestrator max tokens per turn.")] = 512,
    force: Annotated[bool, typer.Option(help="Restart a run folder made with other settings.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar.")] = True,
) -> None:
    from orchestra.config import load_config
    from orchestra.envs.registry import load_suite
    from orchestra.evaluate.config import EvalConfig
    from orchestra.evaluate.spec import SpecContext, resolve_orchestrator
    from orchestra.evaluate.store import read_items
    from orchestra.rollout.batch import EpisodeSettings
    from orchestra.rollout.budget import Budget

    pool_tools: tuple[Any, ...] = ()
    try:
        env_config = env_options(env, data=data, part=part, dev_fraction=dev_fraction, seed=seed,
                                 extra=env_set or [])
        cfg = load_config(None, EvalConfig, default={
            "env": env_config, "orchestrators": orchestrator, "limit": limit, "trials": trials,
            "concurrency": concurrency, "seed": seed, "prices": prices, "preferences": preferences, "pool": pool,
            "prefer_avoid": [m.strip() for m in (prefer_avoid or "").split(",") if m.strip()],
            "max_turns": max_turns, "budget_usd": budget_usd, "run_budget_usd": run_budget_usd,
            "temperature": temperature, "max_tokens": max_tokens})
        table, price_info = load_prices(cfg.prices)
        suite = load_suite(with_recorded_prices(cfg.env, price_info.get("recorded"), cfg.prices))
        tasks = list(suite.tasks)[: cfg.limit]
        prefs = _preferences(suite.models, cfg.prefer_avoid, cfg.preferences)
        limits = Limits(max_turns=cfg.max_turns, budget_usd=cfg.budget_usd)
        sampling = Sampling(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
        pool_tools = _pool_tools(cfg.pool, table) if cfg.pool and not suite.brings_models else ()
        ctx = SpecContext(suite, cfg.seed, table, cfg.pool, local_model, endpoint_model, api_key_env)
        base = read_items(base_run / "items.jsonl") if base_run else None
        run_budget = Budget(cfg.run_budget_usd) if cfg.run_budget_usd is not None else None
        summaries = []
        names = run_names(cfg.orchestrators)
        for spec in cfg.orchestrators:
            resolved = resolve_orchestrator(spec, ctx)
            settings = resolved.episode_settings(
                EpisodeSettings(pool_tools=pool_tools, preferences=prefs, limits=limits, sampling=sampling,
                                budget=run_budget))
            config = {"env": dict(suite.identity), "spec": spec, "prices": price_info, "pool": pool_identity(cfg.pool)}
            results = asyncio.run(run_with_progress(
                suite.env, tasks, resolved, out / names[spec], config=config, settings=settings, trials=cfg.trials,
                concurrency=cfg.concurrency, force=force, base_records=base, show=progress))
            summaries.append((spec, out / names[spec], results))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if pool_tools:  # the pool's MCP servers end with the run, not at interpreter exit
            from orchestra.tools.mcp import close_tools

            close_tools(pool_tools)
    print_summary(summaries)


def env_options(name: str, *, data: str | None = None, part: str | None = None, dev_fraction: float | None = None,
                seed: int | None = None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The environment config the generic flags describe: each flag fills the field of that name when the
    environment has one (`data` fills `path` for folder-based environments); `extra` holds KEY=VALUE pairs."""
    from orchestra.envs.registry import config_type

    fields = config_type(name).model_fields
    out: dict[str, Any] = {"name": name}
    if data is not None:
        out["data" if "data" in fields else "path"] = data
    for key, value in (("part", part), ("dev_fraction", dev_fraction), ("seed", seed)):
        if value is not None and key in fields:
            out[key] = value
    for item in extra:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--env-set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--env-set {item!r}: the value is not valid YAML; quote it") from None
    return out


def pool_identity(path: str | None) -> dict[str, Any] | None:
    """The pool file and the digest of its resolved config (so editing the file changes the run's identity)."""
    if not path:
        return None
    from orchestra.config import dump_config
    from orchestra.pool import load_pool_config

    resolved = dump_config(load_pool_config(path))
    return {"path": path, "sha256": hashlib.sha256(resolved.encode()).hexdigest()[:16]}


def with_recorded_prices(env: dict[str, Any], recorded: Any, path: str | None) -> dict[str, Any]:
    """`env` with a prices file's `recorded:` section as its `recorded_prices` (environments that replay recorded
    costs have that field; for any other the section is an error)."""
    if recorded is None:
        return env
    from orchestra.envs.registry import config_type

    if "recorded_prices" not in config_type(env["name"]).model_fields:
        raise ConfigError(f"--prices {path}: `recorded:` reprices recorded answers; {env['name']} replays none")
    return {**env, "recorded_prices": recorded}


def _preferences(models: Sequence[str], prefer_avoid: Sequence[str], path: str | None) -> Preferences | None:
    if prefer_avoid:
        return avoid_preferences(prefer_avoid, list(models))
    return load_preferences(path) if path else None


def _pool_tools(pool: str, prices: PriceTable) -> tuple[Any, ...]:
    from orchestra.pool import build_pool, load_pool_config

    return build_pool(load_pool_config(pool), prices=prices).tools


async def run_with_progress(env: Environment, tasks: Sequence[Task], orchestrator: Any, run_dir: Path, *,
                            show: bool = True, **kwargs: Any) -> dict[str, Any]:
    """`evaluate` with a rich progress bar showing items done, accuracy and spend so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestra.evaluate.run import evaluate

    total = len(tasks) * kwargs.get("trials", 1)
    tally = {"n": 0, "solved": 0, "cost_usd": 0.0}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                  TimeElapsedColumn(), disable=not show, transient=False) as bar:
        handle = bar.add_task(orchestrator.spec, total=total, stats="")

        def count(records: Sequence[Any]) -> None:
            for r in records:
                tally["n"] += 1
                tally["solved"] += int(bool(r["solved"]))
                tally["cost_usd"] += float(r["cost_usd"])
            accuracy = tally["solved"] / tally["n"] if tally["n"] else 0.0
            bar.update(handle, completed=tally["n"], stats=f"acc {accuracy:.3f}  spent ${tally['cost_usd']:.4f}")

        return await evaluate(env, tasks, orchestrator, run_dir, on_start=count, on_item=lambda r: count([r]),
                              **kwargs)


def print_summary(summaries: Sequence[tuple[str, Path, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation")
    for column in ("orchestrator", "n", "accuracy", "$/query", "latency s", "run folder"):
        table.add_column(column)
    for spec, run_dir, r in summaries:
        table.add_row(spec, str(r["n"]), f"{r['accuracy']:.4f}", f"{r['cost_per_query_usd']:.6f}",
                      f"{r['latency_per_query_s']:.3f}", str(run_dir))
    Console().print(table)


def report_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or folders of run folders) with results.json.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md and report.html.")] = Path("report"),
    title: Annotated[str, typer.Option(help="Report title.")] = "orchestra evaluation report",
) -> None:
    from orchestra.evaluate.report_files import write_report

    try:
        paths = write_report(runs, out, title=title)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in paths:
        typer.echo(str(path))


def compare_command(
    run: Annotated[Path, typer.Argument(help="The run folder to compare (results.json and items.jsonl).")],
    others: Annotated[list[Path], typer.Argument(help="Run folders to compare it with, on the same items.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparisons as JSON.")] = False,
) -> None:
    """Paired comparison on the same items: wins and losses, the exact McNemar p-value, and 95% bootstrap
    intervals of the accuracy difference and of the relative cost change (RUN against each other run)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from orchestra.evaluate.paired import compare_runs, run_label

    try:
        labels = [run_label(r) for r in (run, *others)]
        # Runs with the same label (two orchestrators, say) are told apart by their folders.
        names = [str(path) if labels.count(label) > 1 else label for path, label in zip((run, *others), labels, strict=True)]
        results = [compare_runs(run, other, names=(names[0], name)) for other, name in zip(others, names[1:], strict=True)]
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2))
        return
    table = Table(title=f"{results[0].a} against each run, on the same {results[0].n} items")
    for column in ("against", "accuracy", "difference [95% CI]", "won/lost", "McNemar p", "$/query",
                   "cost change [95% CI]"):
        table.add_column(column)
    for r in results:
        table.add_row(r.b, f"{r.accuracy_a:.3f} vs {r.accuracy_b:.3f}",
                      f"{r.accuracy_diff:+.3f} [{r.accuracy_diff_ci[0]:+.3f}, {r.accuracy_diff_ci[1]:+.3f}]",
                      f"{r.wins}/{r.losses}", f"{r.p_value:.3g}", f"{r.cost_a:.6f} vs {r.cost_b:.6f}",
                      f"{r.cost_change:+.1%} [{r.cost_change_ci[0]:+.1%}, {r.cost_change_ci[1]:+.1%}]")
    console = Console()
    console.print(table)
    for r in results:
        console.print(r.verdict(), markup=False)
        if r.env_differences:
            console.print(f"  (environment configs differ: {'; '.join(r.env_differences)})", markup=False)


def routes_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (items.jsonl) to sum up.")],
    by: Annotated[str, typer.Option(help="Item metadata field to group the items by.")] = "task_type",
    top: Annotated[int, typer.Option(min=1, help="Routes shown per group; the rest are summed up in one row.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print every route of every run as JSON.")] = False,
) -> None:
    """The calls each run made, as routes counted per group of items: how many items took each, solved, mean cost."""
    import json

    from rich.console import Console
    from rich.table import Table

    from orchestra.evaluate.routes import run_routes

    try:
        counted = {str(run): run_routes(run, by) for run in runs}
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({run: {group: [r.as_dict() for r in routes] for group, routes in groups.items()}
                               for run, groups in counted.items()}, indent=2))
        return
    console = Console()
    for run, groups in counted.items():
        table = Table(title=f"{run}: routes by {by}")
        for column in ("group", "items", "solved", "$/item", "route"):
            table.add_column(column)
        for group, routes in groups.items():
            for r in routes[:top]:
                table.add_row(group, str(r.items), str(r.solved), f"{r.cost_usd:.6f}", r.route)
            rest = routes[top:]
            if rest:
                n = sum(r.items for r in rest)
                table.add_row(group, str(n), str(sum(r.solved for r in rest)),
                              f"{sum(r.cost_usd * r.items for r in rest) / n:.6f}", f"({len(rest)} other routes)")
        console.print(table)
