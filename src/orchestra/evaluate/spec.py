"""Orchestrator specs: one string names what to evaluate, resolved here to a `ChatBackend` and its prompt builder.

Forms
- The environment's baselines (`Suite.baselines`, e.g. RouterBench's `always:<model>`, `cheapest`, `random`,
  `oracle`, `cascade`, `cascade:<m1>,<m2>,...`, `knn`, `knn:<lambda>`): `<head>[:<arg>]`.
- `prompted:<model>`: an LLM prompted as orchestrator with the environment's tools; the model is one of the pool's
  models (an expert tool or the pool's orchestrator, matched by model name or tool name). `prompted:local`: a local
  transformers model (`local_model` folder, or the bundled SmolLM2 when none is given).
- A trained checkpoint folder holding `orchestra.json` (`{"prompt": "<builder name>", "model": "<name>"}`) and a
  Hugging Face model and tokenizer: `LocalBackend.from_pretrained`. Its prompt and observation format are the ones
  it was trained with: `default`, or the name of an environment's compact prompt (`routerbench/compact`,
  `tau/compact`), which must be the evaluated environment's own (`Suite.prompt_name`). Its identity includes a
  digest of the folder (weights and metadata), so retraining into the same folder changes every run's hash.
- `http://...` or `https://...`: an OpenAI-compatible endpoint serving an orchestrator (`endpoint_model` names the
  model, as priced in the price table).

Local models cost $0 per token unless the price table lists them (they run on the user's own hardware); remote ones
must have a price (a missing one is a `ConfigError`). Heavy backends are imported only when a spec asks for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestra.backends.base import ChatBackend
from orchestra.backends.pricing import ModelPrice, PriceTable
from orchestra.envs.base import Suite
from orchestra.errors import ConfigError
from orchestra.rollout.batch import EpisodeSettings
from orchestra.rollout.episode import ObservationRenderer, PromptBuilder
from orchestra.rollout.guard import plain, wrap_untrusted
from orchestra.rollout.prompt import default_prompt
from orchestra.task import InstancePolicy

OBSERVATION_RENDERERS: dict[str, ObservationRenderer] = {"untrusted": wrap_untrusted, "plain": plain}
LEGACY_PROMPTS = {"routerbench-compact": "routerbench/compact"}
"""Prompt names written by earlier checkpoints, and what they are called now."""


@dataclass(frozen=True)
class Orchestrator:
    """What an evaluation runs: the backend, its prompt builder, the spec it came from, and what was resolved."""

    backend: ChatBackend | InstancePolicy
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

    suite: Suite | None = None
    """The environment being evaluated (its baselines, prompt and observation format)."""
    seed: int = 0
    prices: PriceTable = field(default_factory=PriceTable.default)
    pool: str | Path | None = None
    local_model: str | Path | None = None
    endpoint_model: str | None = None
    api_key_env: str | None = None
    local_batch_size: int = 64
    """Rows per batch when a local model generates for concurrent episodes."""


def resolve_orchestrator(spec: str, ctx: SpecContext) -> Orchestrator:
    """The orchestrator `spec` names (see the module docstring); a `ConfigError` lists the forms otherwise."""
    head, _, arg = spec.partition(":")
    if spec.startswith(("http://", "https://")):
        return _endpoint(spec, ctx)
    baselines = ctx.suite.baselines if ctx.suite is not None else {}
    if head in baselines:
        policy = baselines[head](arg)
        return Orchestrator(policy, default_prompt, spec, dict(getattr(policy, "details", {})))
    if head == "prompted":
        return _prompted(spec, arg, ctx)
    path = Path(spec)
    if path.is_dir() and (path / "orchestra.json").exists():
        return _checkpoint(path, ctx)
    forms = ", ".join(f"{h}[:...]" for h in baselines)
    raise ConfigError(
        f"orchestrator {spec!r}: not a known form. Use {forms + ', ' if forms else ''}prompted:<model>, "
        "prompted:local, a checkpoint folder with orchestra.json, or an http(s):// endpoint"
    )


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
    from orchestra.pool import load_pool_config, make_backend, prompt_profile

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
    build_prompt, render_observation = prompt_profile(config.prompt)  # the pool's profile, e.g. toolorchestra
    return Orchestrator(make_backend(endpoint, prices), build_prompt, spec,
                        {"model": endpoint.model, "kind": endpoint.kind,
                         **({"prompt": config.prompt} if config.prompt != "default" else {})},
                        render_observation if config.prompt != "default" else None)


def _checkpoint(path: Path, ctx: SpecContext) -> Orchestrator:
    try:
        meta = json.loads((path / "orchestra.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path / 'orchestra.json'}: unreadable ({exc})") from None
    prompt_name = LEGACY_PROMPTS.get(meta.get("prompt", "default"), meta.get("prompt", "default"))
    builder = _trained_prompt(prompt_name, ctx.suite, path)
    renderer = _trained_observation(str(meta.get("observation", "untrusted")), ctx.suite, path)
    from orchestra.backends.local import LocalBackend
    from orchestra.envs.registry import file_digest

    name = str(meta.get("model") or path.name)
    backend = LocalBackend.from_pretrained(str(path), name=name, price=_local_price(ctx.prices, name),
                                           render_tools=bool(meta.get("render_tools", True)),
                                           calls=meta.get("calls", "hermes"), max_batch_size=ctx.local_batch_size)
    details = {"prompt": prompt_name, "model": name, "observation": meta.get("observation", "untrusted"),
               "render_tools": bool(meta.get("render_tools", True)), "trained_by": meta.get("trained_by", ""),
               "folder_sha256": file_digest(path)}
    if meta.get("calls", "hermes") != "hermes":  # hermes folders keep the identity their stored runs were made under
        details["calls"] = meta["calls"]
    return Orchestrator(backend, builder, str(path), details, renderer, meta.get("max_tokens"), meta.get("max_turns"))


def _endpoint(url: str, ctx: SpecContext) -> Orchestrator:
    from orchestra.config import ModelEndpoint
    from orchestra.pool import make_backend

    if not ctx.endpoint_model:
        raise ConfigError(f"orchestrator {url!r}: give the served model's name (--endpoint-model), as priced in the "
                          "price table or a --prices file")
    endpoint = ModelEndpoint(kind="openai", model=ctx.endpoint_model, base_url=url, api_key_env=ctx.api_key_env)
    return Orchestrator(make_backend(endpoint, ctx.prices), default_prompt, url, {"model": ctx.endpoint_model})


def _trained_prompt(name: str, suite: Suite | None, path: Path) -> PromptBuilder:
    """The prompt builder a checkpoint was trained with: `default`, or the evaluated environment's own."""
    if name == "default":
        return default_prompt
    if suite is not None and name in (suite.prompt_name, "env"):  # "env": trained on a mixture, each env's own
        return suite.prompt
    where = f"this environment's is {suite.prompt_name!r}" if suite is not None else "no environment is given"
    raise ConfigError(f"{path / 'orchestra.json'}: trained with prompt {name!r}, but {where}; evaluate it on the "
                      "environment it was trained for")


def _trained_observation(name: str, suite: Suite | None, path: Path) -> ObservationRenderer:
    if name in OBSERVATION_RENDERERS:
        return OBSERVATION_RENDERERS[name]
    if suite is not None and name in (suite.observation_name, "env"):
        return suite.observation
    raise ConfigError(f"{path / 'orchestra.json'}: observation format {name!r} is not one of "
                      f"{', '.join([*OBSERVATION_RENDERERS, *([suite.observation_name] if suite else [])])}")


def _local_price(prices: PriceTable, name: str) -> ModelPrice:
    return prices.models.get(name) or ModelPrice(0.0, 0.0, "local")
