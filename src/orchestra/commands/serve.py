"""`orchestra serve`: the orchestrator behind an OpenAI-compatible HTTP API (see `orchestra.serve.app`);
`orchestra serve-model`: a local transformers model behind the same API (see `orchestra.serve.model_server`).

Binds 127.0.0.1 unless told otherwise; with no API key configured it refuses any other address (RELIABILITY V10).
SIGTERM (or Ctrl-C) stops accepting connections and lets open streams finish for `--grace-s` seconds.
Logs go to stderr through the redacting filter, so a key can never reach them even by accident.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost")

PoolOption = Annotated[Path | None, typer.Option("--pool", help="Pool YAML (default: the bundled offline pool).")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Dotted override of the pool, e.g. "
                                                                    "limits.max_turns=4.")]


def serve(
    pool: PoolOption = None,
    set_: SetOption = None,
    orchestrator: Annotated[str | None, typer.Option(
        help="Serve this orchestrator instead of the pool's: a trained checkpoint folder, or an http(s):// "
             "endpoint (with --endpoint-model).")] = None,
    endpoint_model: Annotated[str | None, typer.Option(help="Model name of an http(s) --orchestrator.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    api_keys_file: Annotated[Path | None, typer.Option(
        help="File of API keys, one per line, each optionally followed by its dollar budget. Also read: "
             "ORCHESTRA_API_KEYS (comma-separated).")] = None,
    key_budget_usd: Annotated[float | None, typer.Option(
        help="Budget of each key that has none of its own (default: none).")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 1_000_000,
    max_concurrent: Annotated[int, typer.Option(help="Episodes run at once; more are refused (503).")] = 64,
    trajectories: Annotated[Path | None, typer.Option(
        help="Append every episode's trajectory to DIR/trajectories.jsonl.")] = None,
    grace_s: Annotated[float, typer.Option(help="Seconds open streams get to finish on shutdown.")] = 30.0,
) -> None:
    _configure_logging()
    try:
        app = build_app(pool, tuple(set_ or ()), orchestrator, endpoint_model, host, api_keys_file, key_budget_usd,
                        max_body_bytes, max_concurrent, trajectories)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    _run(app, host, port, grace_s)


def serve_model(
    model: Annotated[str, typer.Option(
        help="tiny (a random tiny model, for tests), bundled (SmolLM2-135M-Instruct), or a checkpoint folder.")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8001,
    api_keys_file: Annotated[Path | None, typer.Option(
        help="File of API keys, one per line. Also read: ORCHESTRA_API_KEYS (comma-separated).")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Requests generated together in one model batch.")] = 16,
    batch_wait_s: Annotated[float, typer.Option(help="How long a batch waits for more requests.")] = 0.01,
    max_tokens: Annotated[int, typer.Option(help="Completion tokens when a request gives no limit.")] = 256,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 4_000_000,
    grace_s: Annotated[float, typer.Option(help="Seconds open requests get to finish on shutdown.")] = 30.0,
) -> None:
    """Serve a local transformers model behind an OpenAI-compatible API (hermes tool calls, batched generation)."""
    _configure_logging()
    try:
        from orchestra.serve.auth import KeyRing
        from orchestra.serve.model_server import create_model_app, load_model

        keys = KeyRing.load(api_keys_file)
        _check_bind(host, keys)
        if max_batch_size < 1 or max_tokens < 1 or max_body_bytes < 1:
            raise ConfigError("--max-batch-size, --max-tokens and --max-body-bytes must be at least 1")
        backend = load_model(model, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s)
        app = create_model_app(backend, keys, max_body_bytes=max_body_bytes, default_max_tokens=max_tokens)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    _run(app, host, port, grace_s)


def _run(app: Any, host: str, port: int, grace_s: float) -> None:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=grace_s,
                            lifespan="on")
    asyncio.run(uvicorn.Server(config).serve())


def _check_bind(host: str, keys: Any) -> None:
    if keys.open and host not in LOCAL_HOSTS:
        raise ConfigError(f"--host {host}: no API key is configured, so the server only binds 127.0.0.1; give "
                          "--api-keys-file or ORCHESTRA_API_KEYS to serve other addresses")


def build_app(pool: Path | None, overrides: tuple[str, ...], orchestrator: str | None, endpoint_model: str | None,
              host: str, api_keys_file: Path | None, key_budget_usd: float | None, max_body_bytes: int,
              max_concurrent: int, trajectories: Path | None) -> Any:
    from orchestra.pool import build_pool, load_pool_config
    from orchestra.serve.app import ServeSettings, create_app
    from orchestra.serve.auth import KeyRing
    from orchestra.serve.episode import ServedPool

    keys = KeyRing.load(api_keys_file, default_budget_usd=key_budget_usd)
    _check_bind(host, keys)
    if max_body_bytes < 1 or max_concurrent < 1:
        raise ConfigError("--max-body-bytes and --max-concurrent must be at least 1")
    if key_budget_usd is not None and key_budget_usd < 0:
        raise ConfigError("--key-budget-usd must be >= 0")
    built = build_pool(load_pool_config(pool, overrides))
    served = ServedPool(built.orchestrator, built.tools, built.preferences, built.limits, built.sampling)
    if orchestrator is not None:
        served = _override_orchestrator(served, orchestrator, endpoint_model, built.prices, pool)
    if trajectories is not None:
        trajectories.mkdir(parents=True, exist_ok=True)
    # The pool closes what it built; an orchestrator given on the command line is closed on its own.
    closers = (built,) + ((served.orchestrator,) if served.orchestrator is not built.orchestrator
                          and hasattr(served.orchestrator, "aclose") else ())
    return create_app(ServeSettings(served, keys, max_body_bytes, max_concurrent, trajectories, closers))


def _override_orchestrator(served: Any, spec: str, endpoint_model: str | None, prices: Any,
                           pool: Path | None) -> Any:
    from dataclasses import replace

    from orchestra.evaluate.spec import SpecContext, resolve_orchestrator

    resolved = resolve_orchestrator(spec, SpecContext(prices=prices, pool=pool, endpoint_model=endpoint_model))
    limits = served.limits
    if resolved.max_turns is not None:
        limits = replace(limits, max_turns=resolved.max_turns)
    sampling = served.sampling
    if resolved.max_tokens is not None:
        sampling = replace(sampling, max_tokens=resolved.max_tokens)
    return replace(served, orchestrator=resolved.backend, build_prompt=resolved.build_prompt, limits=limits,
                   sampling=sampling, render_observation=resolved.render_observation or served.render_observation)


def _configure_logging() -> None:
    from orchestra.redact import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
