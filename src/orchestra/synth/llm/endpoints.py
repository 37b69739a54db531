"""Which model the pipeline talks to: a model spec as the other commands name one, resolved to a `Model`.

Forms (`--model SPEC`):
- `NAME --base-url URL`: an OpenAI-compatible endpoint serving NAME (as priced in the price table, as in a pool's
  `{kind: openai, model, base_url}`);
- `http(s)://URL --endpoint-model NAME`: the same, written as `orchestra eval -o` writes an endpoint;
- `bundled`: the bundled SmolLM2-135M-Instruct, in this process (transformers; slow, but needs no server).
An unpriced name is a `ConfigError` listing the known ones (`--prices` adds names). Before a run starts,
`check_reachable` sends one GET to the endpoint: connection refused is a one-line `ConfigError` naming the URL,
rather than every item failing after the backend's retries.
"""

from __future__ import annotations

from pathlib import Path

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.backends.pricing import PriceTable
from orchestra.config import ModelEndpoint, PricesConfig, load_config
from orchestra.errors import ConfigError
from orchestra.redact import redact
from orchestra.synth.llm.items import Model

try:
    import httpx2 as httpx
except ImportError:  # an older `openai` that still depends on plain httpx
    import httpx  # type: ignore[no-redef]


def resolve_model(spec: str, *, base_url: str | None = None, endpoint_model: str | None = None,
                  api_key_env: str | None = None, prices: Path | None = None, temperature: float = 0.7,
                  max_tokens: int = 768, timeout_s: float = 120.0, max_attempts: int = 3,
                  flag: str = "--model") -> Model:
    """The `Model` a spec names (see the module docstring)."""
    from orchestra.pool import make_backend

    table = PriceTable.default()
    if prices is not None:
        table = table.with_overrides(load_config(prices, PricesConfig))
    if spec.startswith(("http://", "https://")):
        if not endpoint_model:
            raise ConfigError(f"{flag} {spec}: name the served model with --endpoint-model (as priced in the "
                              "price table)")
        base_url, spec = spec, endpoint_model
    if spec == "bundled":
        endpoint = ModelEndpoint(kind="bundled", max_tokens=max_tokens)
    elif base_url is None:
        raise ConfigError(f"{flag} {spec!r}: give its endpoint with --base-url http://HOST:PORT/v1, write "
                          f"{flag} http://HOST:PORT/v1 --endpoint-model NAME, or use {flag} bundled")
    else:
        try:
            endpoint = ModelEndpoint(kind="openai", model=spec, base_url=base_url, api_key_env=api_key_env,
                                     timeout_s=timeout_s, max_attempts=max_attempts)
        except ValueError as exc:
            raise ConfigError(f"--base-url {redact(base_url)}: {_first_error(exc)}") from None
    backend: ChatBackend = make_backend(endpoint, table)
    return Model(backend, Sampling(temperature=temperature, max_tokens=max_tokens))


def check_reachable(model: Model, *, timeout_s: float = 5.0) -> None:
    """A `ConfigError` when the model's HTTP endpoint does not answer at all (any HTTP status counts as up)."""
    base_url = getattr(model.backend, "base_url", None)
    if base_url is None:
        return
    try:
        httpx.get(f"{base_url}/models", timeout=timeout_s)
    except httpx.TransportError as exc:
        raise ConfigError(f"model endpoint {redact(base_url)}: not reachable ({type(exc).__name__}); start the server "
                          "or fix --base-url") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return str(errors()[0].get("msg", exc))
    return str(exc)
