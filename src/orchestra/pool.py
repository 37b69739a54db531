"""Pool: the orchestrator backend and the tools one run may use, built from a `PoolConfig`.

Building a pool resolves every model against the price table first, so a model-tool with no price fails here, at
load, naming the field (`tools.2.expert.model`), and never runs at $0 by accident. Heavy backends (transformers) are
imported only when a pool asks for them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pydantic

from orchestra.backends.base import ChatBackend, Sampling, worst_case_cost_usd
from orchestra.backends.pricing import ModelPrice, PriceTable
from orchestra.config import ModelEndpoint, PoolConfig, load_config
from orchestra.errors import ConfigError
from orchestra.preferences import Limits, Preferences
from orchestra.rollout.episode import ObservationRenderer, PromptBuilder
from orchestra.rollout.guard import plain, wrap_untrusted
from orchestra.rollout.prompt import default_prompt
from orchestra.tools.builtin import BUILTINS
from orchestra.tools.builtin.expert import expert_tool
from orchestra.tools.spec import Tool, ToolSpec
from orchestra.types import Completion, Message


@dataclass(frozen=True)
class Pool:
    orchestrator: ChatBackend
    tools: tuple[Tool, ...]
    prices: PriceTable
    preferences: Preferences | None
    limits: Limits
    sampling: Sampling
    build_prompt: PromptBuilder = default_prompt
    """The orchestrator's prompt (`PoolConfig.prompt`)."""
    render_observation: ObservationRenderer = wrap_untrusted
    backends: tuple[ChatBackend, ...] = ()
    """Every backend the pool built (the orchestrator's and the model-tools'), each once: what `aclose` closes."""

    async def aclose(self) -> None:
        """Close what the pool opened: its HTTP backends' connections and its MCP sessions (a stdio server is
        stopped). Closing twice is a no-op. An HTTP backend used again reconnects; an MCP tool fails at once."""
        for backend in self.backends:
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()
        from orchestra.tools.mcp import close_tools

        await asyncio.to_thread(close_tools, self.tools)


def default_pool_path() -> Path:
    """The bundled offline pool: SmolLM2-135M-Instruct orchestrating a calculator and itself as an expert."""
    return Path(str(resources.files("orchestra").joinpath("data/default_pool.yaml")))


def load_pool_config(path: str | Path | None, overrides: tuple[str, ...] = ()) -> PoolConfig:
    return load_config(path or default_pool_path(), PoolConfig, overrides)


def build_pool(config: PoolConfig, *, prices: PriceTable | None = None) -> Pool:
    table = (prices or PriceTable.default()).with_overrides(config.prices.as_overrides() or None)
    _price(table, config.orchestrator, "orchestrator.model")
    for i, entry in enumerate(config.tools):
        if entry.mcp is not None:
            continue  # its server is started below, once every model is known to have a price
        if entry.expert is not None:
            _price(table, entry.expert, f"tools.{i}.expert.model")
        elif entry.builtin not in BUILTINS:
            raise ConfigError(f"tools.{i}.builtin: unknown tool {entry.builtin!r}; built-in tools: "
                              f"{', '.join(sorted(BUILTINS))}")
    cache: dict[tuple[object, ...], ChatBackend] = {}
    orchestrator = make_backend(config.orchestrator, table, cache)
    tools = []
    for i, entry in enumerate(config.tools):
        if entry.mcp is not None:
            from orchestra.tools.mcp import mcp_tools

            tools.extend(mcp_tools(entry.mcp, field=f"tools.{i}.mcp"))
            continue
        if entry.builtin is not None:
            tools.append(_builtin(entry.builtin, entry.options, f"tools.{i}"))
            continue
        assert entry.expert is not None and entry.name is not None
        backend = make_backend(entry.expert, table, cache)
        price = table.model(entry.expert.model)
        tools.append(expert_tool(
            entry.name, backend, description=entry.description or f"the {entry.expert.model} model",
            card=price.card(entry.latency_s), kind=entry.tool_kind, provider=price.provider,
            max_tokens=entry.expert.max_tokens,
        ))
    tools.extend(_paper_tools(config, table, cache))
    p = config.preferences
    preferences = Preferences(dict(p.tool_weights), p.outcome, p.cost, p.latency, p.instruction) if p else None
    lim = config.limits
    limits = Limits(lim.max_turns, lim.budget_usd, frozenset(lim.banned_tools), frozenset(lim.banned_providers))
    sampling = Sampling(temperature=config.orchestrator.temperature, max_tokens=config.orchestrator.max_tokens)
    build_prompt, render_observation = prompt_profile(config.prompt)
    return Pool(orchestrator, tuple(tools), table, preferences, limits, sampling, build_prompt, render_observation,
                tuple(cache.values()))


def prompt_profile(name: str) -> tuple[PromptBuilder, ObservationRenderer]:
    """The prompt builder and observation format a pool's `prompt:` names."""
    if name == "toolorchestra":
        from orchestra.profiles.toolorchestra import toolorchestra_prompt

        return toolorchestra_prompt, plain
    return default_prompt, wrap_untrusted


def _paper_tools(config: PoolConfig, table: PriceTable, cache: dict[tuple[object, ...], ChatBackend]) -> list[Tool]:
    """The paper's search / enhance_reasoning / answer over the pool's `experts` (each alias priced first)."""
    pt = config.paper_tools
    if pt is None:
        return []
    from orchestra.sandbox import SandboxLimits
    from orchestra.tools.builtin.paper_tools import Expert, paper_tools

    offered = {"search": pt.search, "enhance_reasoning": pt.enhance_reasoning, "answer": pt.answer}
    used = {alias for aliases in offered.values() for alias in aliases}
    experts = {}
    for alias, endpoint in config.experts.items():
        if alias not in used:
            continue
        _price(table, endpoint, f"experts.{alias}.model")
        experts[alias] = Expert(
            alias, make_backend(endpoint, table, cache), max_context_chars=endpoint.max_context_chars,
            max_tokens=endpoint.max_tokens, description=endpoint.description, latency_s=endpoint.latency_s,
            answer_format=endpoint.answer_format, timeout_s=endpoint.timeout_s * endpoint.max_attempts + 30.0)
    search_tool = None
    if pt.search:
        if pt.search_tool not in BUILTINS:
            raise ConfigError(f"paper_tools.search_tool: unknown tool {pt.search_tool!r}; built-in tools: "
                              f"{', '.join(sorted(BUILTINS))}")
        search_tool = _builtin(pt.search_tool, pt.search_options, "paper_tools", options_field="search_options")
    descriptions = None
    if pt.descriptions == "release":
        from orchestra.profiles.toolorchestra import release_descriptions

        descriptions = release_descriptions({name: {a: experts[a] for a in aliases}
                                             for name, aliases in offered.items() if aliases})
    return list(paper_tools(experts, **offered, search_tool=search_tool, search_k=pt.search_k,
                            code_limits=SandboxLimits(wall_s=pt.code_wall_s), descriptions=descriptions))


class LazyBackend:
    """A backend built on first use: a pool whose tools are called directly (`orchestra tool call`) never loads
    the orchestrator's weights. Name and worst-case cost are known without loading."""

    def __init__(self, name: str, price: ModelPrice, factory: Callable[[], ChatBackend]):
        self._name = name
        self.price = price
        self._factory = factory
        self._backend: ChatBackend | None = None
        self._lock = asyncio.Lock()

    @property
    def model(self) -> str:
        return self._name

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        return worst_case_cost_usd(self.price, messages, tools, sampling)

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> Completion:
        async with self._lock:
            if self._backend is None:
                self._backend = await asyncio.to_thread(self._factory)
        return await self._backend.complete(messages, tools, sampling)


def make_backend(endpoint: ModelEndpoint, prices: PriceTable,
                 cache: dict[tuple[object, ...], ChatBackend] | None = None) -> ChatBackend:
    """The backend for one endpoint; endpoints with the same weights share one loaded model. Local weights load
    lazily, on the first completion."""
    # Endpoints that send different requests (served name, body fields, streaming, rate) get their own backend.
    key = (endpoint.kind, endpoint.model, endpoint.path, endpoint.base_url, endpoint.api_model, endpoint.reasoning,
           json.dumps(endpoint.extra_body, sort_keys=True), endpoint.stream, endpoint.max_requests_per_s)
    if cache is not None and key in cache:
        return cache[key]
    price = prices.model(endpoint.model)
    backend: ChatBackend
    if endpoint.kind != "openai":
        backend = LazyBackend(endpoint.model, price, lambda: _local_backend(endpoint, price))
    else:
        from orchestra.backends.openai_compat import OpenAICompatBackend

        backend = OpenAICompatBackend(
            model=endpoint.model, base_url=endpoint.base_url or "", api_key_env=endpoint.api_key_env,
            price=price, timeout_s=endpoint.timeout_s, max_attempts=endpoint.max_attempts,
            api_model=endpoint.api_model, extra_body=endpoint.extra_body, stream=endpoint.stream,
            reasoning=None if endpoint.reasoning == "auto" else endpoint.reasoning,
            max_requests_per_s=endpoint.max_requests_per_s,
        )
    if cache is not None:
        cache[key] = backend
    return backend


def _local_backend(endpoint: ModelEndpoint, price: ModelPrice) -> ChatBackend:
    from orchestra.backends.local import LocalBackend

    if endpoint.kind == "bundled":
        return LocalBackend.smollm2(price=price, first_call=endpoint.first_call)
    return LocalBackend.from_pretrained(endpoint.path or "", name=endpoint.model, price=price,
                                        first_call=endpoint.first_call)


def _builtin(name: str, options: dict[str, object], field: str, *, options_field: str = "options") -> Tool:
    """Build a built-in tool with the pool's `options` as keyword arguments, validated against its factory's
    signature; a bad option is a `ConfigError` naming `tools.N.options.KEY` (`FIELD.OPTIONS_FIELD.KEY`)."""
    factory = BUILTINS[name]
    try:
        return pydantic.validate_call(factory)(**options)
    except pydantic.ValidationError as exc:
        accepted = ", ".join(inspect.signature(factory).parameters) or "none"
        problems = "; ".join(f"{field}.{options_field}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"{problems} (options of {name}: {accepted})") from None
    except ConfigError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def _price(table: PriceTable, endpoint: ModelEndpoint, field: str) -> ModelPrice:
    try:
        return table.model(endpoint.model)
    except ConfigError as exc:
        raise ConfigError(f"{field}: {exc}") from None
