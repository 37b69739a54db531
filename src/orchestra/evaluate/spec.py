"""Orchestrator specs: one string names what to evaluate, resolved here to a `ChatBackend` and its prompt builder.

Forms
- RouterBench baselines (`orchestra.envs.routerbench.baselines`): `always:<model>`, `cheapest`, `random`, `oracle`,
  `cascade` (per-task-type default fit on the training part), `cascade:<m1>,<m2>,...`, `knn`.
- `prompted:<model>`: an LLM prompted as orchestrator with the environment's tools; the model is one of the pool's
  models (an expert tool or the pool's orchestrator, matched by model name or tool name). `prompted:local`: a local
  transformers model (`local_model` folder, or the bundled SmolLM2 when none is given).
- A trained checkpoint folder holding `orchestra.json` (`{"prompt": "<builder name>", "model": "<name>"}`) and a
  Hugging Face model and tokenizer: `LocalBackend.from_pretrained`, with the prompt builder named in
  `PROMPT_BUILDERS`.
- `http://...` or `https://...`: an OpenAI-compatible endpoint serving an orchestrator (`endpoint_model` names the
  model, as priced in the price table).

Local models cost $0 per token unless the price table lists them (they run on the user's own hardware); remote ones
must have a price (a missing one is a `ConfigError`). Heavy backends are imported only when a spec asks for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestra.backends.base import ChatBackend
from orchestra.backends.pricing import ModelPrice, PriceTable
from orchestra.envs.base import Environment
from orchestra.envs.routerbench.env import compact_prompt
from orchestra.errors import ConfigError
from orchestra.rollout.batch import EpisodeSettings
from orchestra.rollout.episode import ObservationRenderer, PromptBuilder
from orchestra.rollout.guard import plain, wrap_untrusted
from orchestra.rollout.prompt import default_prompt

PROMPT_BUILDERS: dict[str, PromptBuilder] = {"default": default_prompt, "routerbench-compact": compact_prompt}
"""Prompt builders a checkpoint's `orchestra.json` may name (explicit, so a typo is an error, not a fallback)."""
OBSERVATION_RENDERERS: dict[str, ObservationRenderer] = {"untrusted": wrap_untrusted, "plain": plain}

BASELINES = ("always:<model>", "cheapest", "random", "oracle", "cascade", "cascade:<m1>,<m2>,...", "knn")


@dataclass(frozen=True)
class Orchestrator:
    """What an evaluation runs: the backend, its prompt builder, the spec it came from, and what was resolved."""

    backend: ChatBackend
    build_prompt: PromptBuilder = default_prompt
    spec: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    render_observation: ObservationRenderer | None = None
    """How this orchestrator reads tool results (a trained one: as it was trained); None keeps the run's."""
    max_tokens: int | None = None
    max_turns: int | None = None

    def episode_settings(self, base: EpisodeSettings) -> EpisodeSettings:
        """`base` with what this orchestrator was trained under (observation format, token and turn limits)."""
        settings = base
        if self.render_observation is not None:
            settings = replace(settings, render_observation=self.render_observation)
        if self.max_tokens is not None:
            settings = replace(settings, sampling=replace(settings.sampling, max_tokens=self.max_tokens))
        if self.max_turns is not None:
            settings = replace(settings, limits=replace(settings.limits, max_turns=self.max_turns))
        return settings


@dataclass(frozen=True)
class SpecContext:
    """What resolving a spec may need besides the string."""

    env: Environment
    train_rows: Sequence[Any] | None = None
    """RouterBench rows of the training part (fitting `knn` and the default `cascade`)."""
    seed: int = 0
    prices: PriceTable = field(default_factory=PriceTable.default)
    pool: str | Path | None = None
    local_model: str | Path | None = None
    endpoint_model: str | None = None
    api_key_env: str | None = None
    knn_lambda: float | None = None
    budget_share: float = 0.35
    local_batch_size: int = 64
    """Rows per batch when a local model generates for concurrent episodes."""


def resolve_orchestrator(spec: str, ctx: SpecContext) -> Orchestrator:
    """The orchestrator `spec` names (see the module docstring); a `ConfigError` lists the forms otherwise."""
    head, _, arg = spec.partition(":")
    if spec.startswith(("http://", "https://")):
        return _endpoint(spec, ctx)
    if head in ("always", "cheapest", "random", "oracle", "cascade", "knn"):
        return _baseline(spec, head, arg, ctx)
    if head == "prompted":
        return _prompted(spec, arg, ctx)
    path = Path(spec)
    if path.is_dir() and (path / "orchestra.json").exists():
        return _checkpoint(path, ctx)
    raise ConfigError(
        f"orchestrator {spec!r}: not a known form. Use one of {', '.join(BASELINES)}, prompted:<model>, "
        "prompted:local, a checkpoint folder with orchestra.json, or an http(s):// endpoint"
    )


def _baseline(spec: str, head: str, arg: str, ctx: SpecContext) -> Orchestrator:
    from orchestra.envs.routerbench.env import RouterBench
    from orchestra.envs.routerbench import baselines as b

    env = ctx.env
    if not isinstance(env, RouterBench):
        raise ConfigError(f"orchestrator {spec!r}: baselines replay RouterBench outcomes; for "
                          f"{getattr(env, 'name', 'this environment')} use prompted:<model> or a checkpoint")
    details: dict[str, Any] = {}
    if head == "always":
        if arg not in env.models:
            raise ConfigError(f"orchestrator {spec!r}: unknown model {arg!r}; models: {', '.join(env.models)}")
        backend: ChatBackend = b.Always(arg)
    elif head == "cheapest":
        backend = b.cheapest(env)
        details["model"] = backend.answer_model
    elif head == "random":
        backend = b.RandomModel(env, ctx.seed)
    elif head == "oracle":
        backend = b.Oracle(env)
    elif head == "cascade":
        if arg:
            cascades: Mapping[str, Sequence[str]] = {"*": [m.strip() for m in arg.split(",") if m.strip()]}
        else:
            cascades = b.fit_cascades(_train(ctx, spec), env.models, budget_share=ctx.budget_share)
        backend = b.Cascade(env, cascades, name=spec)
        details["cascades"] = {k: list(v) for k, v in cascades.items()}
    else:
        router = b.fit_knn(_train(ctx, spec), env.models, lam=ctx.knn_lambda, budget_share=ctx.budget_share,
                           seed=ctx.seed)
        backend = b.Knn(router, name=spec)
        details.update(k=router.k, lam=router.lam)
    return Orchestrator(backend, default_prompt, spec, details)


def _train(ctx: SpecContext, spec: str) -> Sequence[Any]:
    if not ctx.train_rows:
        raise ConfigError(f"orchestrator {spec!r}: needs the training part's rows to fit on")
    return ctx.train_rows


def _prompted(spec: str, model: str, ctx: SpecContext) -> Orchestrator:
    if not model:
        raise ConfigError("orchestrator 'prompted:': name a model (prompted:<model>) or prompted:local")
    if model == "local":
        from orchestra.backends.local import LocalBackend

        if ctx.local_model is None:
            backend: ChatBackend = LocalBackend.smollm2(price=_local_price(ctx.prices, "smollm2-135m-instruct"))
        else:
            name = Path(ctx.local_model).name
            backend = LocalBackend.from_pretrained(str(ctx.local_model), name=name,
                                                   price=_local_price(ctx.prices, name))
        return Orchestrator(backend, default_prompt, spec, {"local_model": str(ctx.local_model or "bundled")})
    from orchestra.pool import load_pool_config, make_backend

    config = load_pool_config(ctx.pool)
    endpoints = {config.orchestrator.model: config.orchestrator}
    for entry in config.tools:
        if entry.expert is not None:
            endpoints.setdefault(entry.expert.model, entry.expert)
            endpoints.setdefault(entry.name or "", entry.expert)
    endpoint = endpoints.get(model)
    if endpoint is None:
        raise ConfigError(f"orchestrator {spec!r}: the pool ({ctx.pool or 'default'}) has no model {model!r}; its "
                          f"models: {', '.join(sorted(n for n in endpoints if n))}")
    prices = ctx.prices.with_overrides(config.prices or None)
    return Orchestrator(make_backend(endpoint, prices), default_prompt, spec,
                        {"model": endpoint.model, "kind": endpoint.kind})


def _checkpoint(path: Path, ctx: SpecContext) -> Orchestrator:
    try:
        meta = json.loads((path / "orchestra.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path / 'orchestra.json'}: unreadable ({exc})") from None
    prompt_name = meta.get("prompt", "default")
    builder = PROMPT_BUILDERS.get(prompt_name)
    if builder is None:
        raise ConfigError(f"{path / 'orchestra.json'}: prompt {prompt_name!r} is not one of "
                          f"{', '.join(sorted(PROMPT_BUILDERS))}")
    renderer = OBSERVATION_RENDERERS.get(meta.get("observation", "untrusted"))
    if renderer is None:
        raise ConfigError(f"{path / 'orchestra.json'}: observation {meta.get('observation')!r} is not one of "
                          f"{', '.join(sorted(OBSERVATION_RENDERERS))}")
    from orchestra.backends.local import LocalBackend

    name = str(meta.get("model") or path.name)
    backend = LocalBackend.from_pretrained(str(path), name=name, price=_local_price(ctx.prices, name),
                                           render_tools=bool(meta.get("render_tools", True)),
                                           max_batch_size=ctx.local_batch_size)
    details = {"prompt": prompt_name, "model": name, "observation": meta.get("observation", "untrusted"),
               "render_tools": bool(meta.get("render_tools", True)), "trained_by": meta.get("trained_by", "")}
    return Orchestrator(backend, builder, str(path), details, renderer, meta.get("max_tokens"), meta.get("max_turns"))


def _endpoint(url: str, ctx: SpecContext) -> Orchestrator:
    from orchestra.config import ModelEndpoint
    from orchestra.pool import make_backend

    if not ctx.endpoint_model:
        raise ConfigError(f"orchestrator {url!r}: give the served model's name (--endpoint-model), as priced in the "
                          "price table or a --prices file")
    endpoint = ModelEndpoint(kind="openai", model=ctx.endpoint_model, base_url=url, api_key_env=ctx.api_key_env)
    return Orchestrator(make_backend(endpoint, ctx.prices), default_prompt, url, {"model": ctx.endpoint_model})


def _local_price(prices: PriceTable, name: str) -> ModelPrice:
    return prices.models.get(name) or ModelPrice(0.0, 0.0, "local")
