"""Recorded outcomes of 11 LLMs: ask a model, see its recorded answer, pay its recorded cost.

Entry point: `load(Config) -> Suite` (see `orchestra.envs.base`); nothing heavy is imported here.

The suite's training part is always the split's train rows: model statistics, the fitted baselines (`cascade`,
`knn`) and the demonstration policy see only them, whatever part is evaluated.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestra.envs.base import Suite
from orchestra.envs.routerbench.config import MAX_TURNS, TURN_TOKENS, Config, PreferenceMix

__all__ = ["Config", "PreferenceMix", "load"]

BASELINE_FORMS = ("always:<model>", "cheapest", "random", "oracle", "cascade", "cascade:<m1>,<m2>,...", "knn",
                  "teacher", "teacher:<m1>,<m2>,...")


def load(config: Config) -> Suite:
    from orchestra.envs.routerbench import training
    from orchestra.envs.routerbench.data import PROVIDERS, ModelStats, load_rows, split_rows
    from orchestra.envs.routerbench.env import RouterBench
    from orchestra.envs.routerbench.prompt import compact_prompt
    from orchestra.paths import shared_data
    from orchestra.rollout.guard import plain

    path = Path(config.data) if config.data else shared_data() / "routerbench"
    rows = load_rows(path)
    train, dev = split_rows(rows, config.dev_fraction, config.seed) if config.dev_fraction else (rows, [])
    part = config.part or ("dev" if config.dev_fraction else "all")
    chosen = {"train": train, "dev": dev, "all": rows}[part]
    stats = ModelStats.fit(train)
    described = config.describe_models == "accuracy"
    marked = config.mark_price_changes
    env = RouterBench(chosen, stats, describe_accuracy=described, mark_price_changes=marked)
    train_env = (env if part == "train" or not config.dev_fraction else
                 RouterBench(train, stats, describe_accuracy=described, mark_price_changes=marked))
    _check_models(config, env.models)
    tasks = env.tasks()
    if config.recorded_prices:
        factors = _factors(config.recorded_prices, stats, env.models)
        tasks = [env.offer(t, price_factors=factors) for t in tasks]
    if config.new_models:
        tasks = [env.introduce(t, config.new_models) for t in tasks]
    if part == "train" and config.max_tasks is not None:
        tasks = tasks[: config.max_tasks]
    identity = _identity(config, path, part)
    introduces = bool(config.new_models) or config.preferences.new_model_share > 0

    def examples(seed: int, limit: int | None) -> list[Any]:
        return training.sample_examples(train_env, config.preferences, seed, limit or config.max_tasks,
                                        config.train_models)

    async def demonstrate(chosen_examples: Any) -> list[Any]:
        return await training.collect_demonstrations(train_env, chosen_examples)

    def rebalance(demos: Any, n: int, seed: int) -> list[Any]:
        if config.decision_temper is not None:
            return training.balance_decisions(demos, share, n, seed, config.decision_temper,
                                              per_instruction=config.temper_per_instruction)
        return training.rebalance(demos, share, n, seed)  # type: ignore[arg-type]

    share = config.disagreement_share

    presets = {"default": training.default_preference(config.preferences.cost_weight)}
    for provider in sorted(set(PROVIDERS.values())):
        label = training.PROVIDER_LABELS.get(provider, provider).split("/")[0]
        presets[f"avoid-{label}"] = training.avoid_preference(provider, env.models,
                                                              config.preferences.cost_weight)[0]
    return Suite(
        env=env, preference_presets=presets, tasks=tasks, identity=identity, prompt=compact_prompt,
        prompt_name="routerbench/compact" + ("+accuracy" if described else "") + ("+changes" if marked else "")
        + ("+new" if introduces else ""),
        observation=plain, observation_name="plain", reward_tools=env.models, brings_models=True,
        models=env.models, baselines=_baselines(env, train, config.seed), examples=examples,
        demonstrate=demonstrate,
        select=rebalance if share is not None or config.decision_temper is not None else None, train_env=train_env,
        max_turns=MAX_TURNS, turn_tokens=TURN_TOKENS[config.calls], calls=config.calls,
    )


def _check_models(config: Config, models: Sequence[str]) -> None:
    """`train_models` and `new_models` name known models (and `train_models` at least one)."""
    from orchestra.errors import ConfigError

    unknown = sorted(set(config.train_models or ()) - set(models))
    if unknown or config.train_models == []:
        raise ConfigError(f"routerbench train_models: unknown models {unknown} (known: {', '.join(models)})"
                          if unknown else "routerbench train_models: name at least one model (or leave it unset)")
    unknown = sorted(set(config.new_models) - set(models))
    if unknown:
        raise ConfigError(f"routerbench new_models: unknown models {unknown} (known: {', '.join(models)})")


def _identity(config: Config, path: Path, part: str) -> dict[str, Any]:
    """What an evaluation stamps on its results: the data, the split and every setting that changes the tasks."""
    from orchestra.envs.registry import file_digest

    identity = {"env": "routerbench", "data": str(path), "data_sha256": file_digest(path), "part": part,
                "dev_fraction": config.dev_fraction, "seed": config.seed,
                "recorded_prices": {m: p.model_dump(exclude_none=True) for m, p in config.recorded_prices.items()}}
    if config.train_models is not None:
        identity["train_models"] = sorted(config.train_models)
    if config.describe_models == "accuracy":
        identity["describe_models"] = config.describe_models
    if config.mark_price_changes:
        identity["mark_price_changes"] = True
    if config.new_models:
        identity["new_models"] = sorted(config.new_models)
    return identity


def _factors(prices: Any, stats: Any, models: Any) -> dict[str, float]:
    """Per-model price factors: a factor as given, a flat $ per call over the model's mean recorded cost."""
    from orchestra.errors import ConfigError

    unknown = sorted(set(prices) - set(models))
    if unknown:
        raise ConfigError(f"recorded prices: unknown models {unknown}; models: {', '.join(models)}")
    return {m: p.factor if p.factor is not None else p.per_call_usd / stats.mean_cost_usd[m]
            for m, p in prices.items()}


def _baselines(env: Any, train_rows: list[Any], seed: int) -> dict[str, Any]:
    """Spec head -> factory of the rule policy (fitted ones fit on the training rows on first use)."""
    from orchestra.envs.routerbench import baselines as b
    from orchestra.errors import ConfigError

    models = env.models

    def always(arg: str) -> Any:
        if arg not in models:
            raise ConfigError(f"orchestrator 'always:{arg}': unknown model {arg!r}; models: {', '.join(models)}")
        return b.Always(arg)

    def cascade(arg: str) -> Any:
        if arg:
            return b.Cascade(models, {"*": [m.strip() for m in arg.split(",") if m.strip()]}, name=f"cascade:{arg}")
        return b.Cascade(models, fitted_cascades(), name="cascade")

    @functools.cache
    def fitted_cascades() -> dict[str, tuple[str, ...]]:
        return b.fit_cascades(train_rows, models)

    def knn(arg: str) -> Any:
        lam = float(arg) if arg else None
        router = b.fit_knn(train_rows, models, lam=lam, seed=seed)
        return b.Knn(router, name="knn" if not arg else f"knn:{arg}")

    def teacher(arg: str) -> Any:
        from orchestra.envs.routerbench.demonstrations import Teacher

        chosen = [m.strip() for m in arg.split(",") if m.strip()] if arg else None
        return Teacher(train_rows, chosen, name=f"teacher:{arg}" if arg else "teacher")

    return {
        "always": always,
        "cheapest": lambda arg: b.cheapest(models, env.stats.mean_cost_usd),
        "random": lambda arg: b.RandomModel(models, seed),
        "oracle": lambda arg: b.Oracle(models),
        "cascade": cascade,
        "knn": knn,
        "teacher": teacher,
    }
