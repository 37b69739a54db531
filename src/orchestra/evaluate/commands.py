"""`orchestra eval` and `orchestra report`: thin faces over `evaluate` and `write_report`.

Environments are named through one explicit table (`ENVIRONMENTS`, lazy imports). `eval` runs each orchestrator
spec into `<out>/<spec slug>` (resumable; see `orchestra.evaluate.store`) with a live progress bar (accuracy and
spend so far) and prints a summary table.

RouterBench replays recorded costs: `--prices` reprices what is priced by the table (a prompted or served
orchestrator's own tokens, pool models), not the recorded answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from orchestra.backends.base import Sampling
from orchestra.backends.pricing import PriceTable
from orchestra.envs.base import Environment
from orchestra.errors import ConfigError
from orchestra.preferences import Limits, Preferences
from orchestra.task import Task


@dataclass(frozen=True)
class LoadedEnv:
    """An environment, the tasks to evaluate, the training rows baselines fit on, and what identifies them."""

    env: Environment
    tasks: list[Task]
    config: dict[str, Any]
    train_rows: list[Any] = field(default_factory=list)
    replay: bool = False
    """True when the environment brings its own model tools (pool tools are then not added)."""


def _load_routerbench(data: str | None, part: str | None, dev_fraction: float, seed: int) -> LoadedEnv:
    from orchestra.envs.routerbench.env import ModelStats, RouterBench, load_rows, split_rows
    from orchestra.paths import shared_data

    path = Path(data) if data else shared_data() / "routerbench"
    rows = load_rows(path)
    part = part or ("dev" if dev_fraction else "all")
    if part == "dev" and not dev_fraction:
        raise ConfigError("--part dev needs --dev-fraction > 0 (the share of the train split held apart)")
    train, dev = split_rows(rows, dev_fraction, seed) if dev_fraction else (rows, [])
    chosen = {"train": train, "dev": dev, "all": rows}.get(part)
    if chosen is None:
        raise ConfigError(f"--part {part!r}: use train, dev or all")
    env = RouterBench(chosen, ModelStats.fit(train))
    config = {"env": "routerbench", "data": str(path), "part": part, "dev_fraction": dev_fraction, "seed": seed}
    return LoadedEnv(env, env.tasks(), config, list(train), replay=True)


def _load_qa(data: str | None, part: str | None, dev_fraction: float, seed: int) -> LoadedEnv:
    from orchestra.envs.qa.env import QAEnvironment
    from orchestra.paths import shared_data

    path = Path(data) if data else shared_data() / "frames" / "frames.jsonl"
    env = QAEnvironment(path, dev_fraction=dev_fraction or 0.2)
    part = part or "all"
    config = {"env": "qa", "data": str(path), "part": part, "dev_fraction": env.dev_fraction}
    return LoadedEnv(env, env.tasks(part), config)


def _load_tau(data: str | None, part: str | None, dev_fraction: float, seed: int) -> LoadedEnv:
    from orchestra.envs.tau.env import TauEnvironment
    from orchestra.paths import shared_data

    path = Path(data) if data else shared_data() / "tau2" / "retail"
    env = TauEnvironment(path.name, path=path)  # the folder's name picks the domain's tools; solo mode
    part = part or "all"
    config = {"env": "tau", "data": str(path), "part": part, "mode": env.mode}
    return LoadedEnv(env, list(env.tasks(None if part == "all" else part)), config)


EnvLoader = Callable[[str | None, str | None, float, int], LoadedEnv]
ENVIRONMENTS: dict[str, EnvLoader] = {"routerbench": _load_routerbench, "qa": _load_qa, "tau": _load_tau}


def load_environment(name: str, data: str | None = None, *, part: str | None = None, dev_fraction: float = 0.0,
                     seed: int = 0) -> LoadedEnv:
    loader = ENVIRONMENTS.get(name)
    if loader is None:
        raise ConfigError(f"environment {name!r}: use one of {', '.join(ENVIRONMENTS)}")
    return loader(data, part, dev_fraction, seed)


def avoid_preferences(models: Sequence[str], all_models: Sequence[str]) -> Preferences:
    """Avoid `models`: weight 0 for them, 1 for every other model, and an instruction saying so."""
    avoided = [m.strip() for m in models if m.strip()]
    unknown = [m for m in avoided if all_models and m not in all_models]
    if unknown:
        raise ConfigError(f"--prefer-avoid: unknown models {unknown}; models: {', '.join(all_models)}")
    weights = {m: 0.0 if m in avoided else 1.0 for m in (all_models or avoided)}
    instruction = f"User preference: do not use {', '.join(avoided)}; neither ask them nor answer with them."
    return Preferences(weights, instruction=instruction)


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
    table = PriceTable.default()
    if not path:
        return table, {"version": table.version}
    text = Path(path).read_text()
    overrides = yaml.safe_load(text) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"--prices {path}: expected a mapping with `models` and/or `tools`")
    table = table.with_overrides(overrides)
    return table, {"version": table.version, "overrides": str(path),
                   "overrides_sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.rstrip("/").split("/")[-1] if "://" not in spec else spec).strip("_")


def eval_command(
    env: Annotated[str, typer.Argument(help="Environment: routerbench, qa or tau.")],
    orchestrator: Annotated[list[str], typer.Option("--orchestrator", "-o", help="Spec (repeatable): always:<model>, "
                            "cheapest, random, oracle, cascade[:m1,m2,...], knn, prompted:<model>, prompted:local, "
                            "a checkpoint folder, or an http(s):// endpoint.")],
    data: Annotated[str | None, typer.Option(help="Data file or folder (default: the shared data).")] = None,
    out: Annotated[Path, typer.Option(help="Parent folder; each spec runs in OUT/<spec slug>.")] = Path("runs"),
    part: Annotated[str | None, typer.Option(help="train, dev or all (qa: all, dev, test, START:STOP).")] = None,
    dev_fraction: Annotated[float, typer.Option(help="Share of the train split held apart as dev.")] = 0.0,
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
    knn_lambda: Annotated[float | None, typer.Option(help="knn cost weight (default: fit on train).")] = None,
    max_turns: Annotated[int, typer.Option(help="Turn cap per episode.")] = 10,
    budget_usd: Annotated[float | None, typer.Option(help="Dollar cap per episode.")] = None,
    temperature: Annotated[float, typer.Option(help="Orchestrator sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Orchestrator max tokens per turn.")] = 512,
    force: Annotated[bool, typer.Option(help="Restart a run folder made with other settings.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar.")] = True,
) -> None:
    from orchestra.evaluate.run import preferences_to_dict
    from orchestra.evaluate.spec import SpecContext, resolve_orchestrator
    from orchestra.evaluate.store import read_items
    from orchestra.rollout.batch import EpisodeSettings

    try:
        loaded = load_environment(env, data, part=part, dev_fraction=dev_fraction, seed=seed)
        tasks = loaded.tasks[:limit] if limit is not None else loaded.tasks
        table, price_info = load_prices(prices)
        prefs = _preferences(loaded, prefer_avoid, preferences)
        limits = Limits(max_turns=max_turns, budget_usd=budget_usd)
        sampling = Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed)
        pool_tools = _pool_tools(pool, table) if pool and not loaded.replay else ()
        ctx = SpecContext(loaded.env, loaded.train_rows, seed, table, pool, local_model, endpoint_model, api_key_env,
                          knn_lambda)
        base = read_items(base_run / "items.jsonl") if base_run else None
        summaries = []
        for spec in orchestrator:
            resolved = resolve_orchestrator(spec, ctx)
            settings = resolved.episode_settings(
                EpisodeSettings(pool_tools=pool_tools, preferences=prefs, limits=limits, sampling=sampling))
            config = {**loaded.config, "spec": spec, "prices": price_info, "preferences": preferences_to_dict(prefs),
                      "limits": {"max_turns": settings.limits.max_turns, "budget_usd": budget_usd},
                      "sampling": {"temperature": temperature, "max_tokens": settings.sampling.max_tokens,
                                   "seed": seed},
                      "orchestrator": dict(resolved.details), "pool": pool}
            results = asyncio.run(run_with_progress(
                loaded.env, tasks, resolved, out / slug(spec), config=config, settings=settings, trials=trials,
                concurrency=concurrency, force=force, base_records=base, show=progress))
            summaries.append((spec, out / slug(spec), results))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    print_summary(summaries)


def _preferences(loaded: LoadedEnv, prefer_avoid: str | None, path: str | None) -> Preferences | None:
    if prefer_avoid and path:
        raise ConfigError("give --prefer-avoid or --preferences, not both")
    if prefer_avoid:
        models = list(getattr(loaded.env, "models", ()))
        return avoid_preferences(prefer_avoid.split(","), models)
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
    from orchestra.evaluate.report import write_report

    try:
        paths = write_report(runs, out, title=title)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in paths:
        typer.echo(str(path))
