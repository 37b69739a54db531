"""The orchestrator behind an OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions`.

`create_app(settings)` builds the FastAPI app; `orchestra serve` (`orchestra.commands.serve`) runs it under uvicorn.
Each chat request is one `run_episode` over the served pool (`serve.episode`), answered plainly or as a stream
(`serve.respond`), with the episode's cost, latency and per-tool breakdown in `usage` (`serve.wire`).

Layers, outermost first: API keys (`serve.auth`, every route, 401), body size (`serve.limits`, 413 before the body
is read), then the routes, which check the request (400/404 naming the field), the caller's budget (402) and the
concurrency slots (503, at once) before an episode starts. Every error, including unknown routes and methods, has
the OpenAI shape `{"error": {"message", "type", "code"}}`; no message repeats a header, so keys never echo back.

`GET /trajectories` is the trajectory viewer (`serve.viewer`) over those episodes (behind the same keys).
Trajectories (`--trajectories DIR`) are appended to `DIR/trajectories.jsonl`, one redacted line per episode, each
written whole and fsynced before the episode's response ends; a graceful shutdown (uvicorn's, on SIGTERM: stop
accepting, let open streams finish within the grace period) therefore leaves every answered episode on disk.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orchestra.serve.auth import OPEN, Account, KeyRing
from orchestra.serve.episode import EpisodeJob, ServedPool, prepare
from orchestra.serve.http import error_response, guarded
from orchestra.serve.limits import BodyTooLarge, Slots, too_large_body
from orchestra.serve.respond import EpisodeResponse
from orchestra.serve.runs import TRAJECTORIES, RunItem, load_run
from orchestra.serve.schema import ChatRequest, RequestError, error_body, parse_body
from orchestra.serve.viewer import viewer_router
from orchestra.trajectory import append_trajectory
from orchestra.types import Trajectory

log = logging.getLogger("orchestra.serve")


@dataclass(frozen=True)
class ServeSettings:
    served: ServedPool
    keys: KeyRing
    max_body_bytes: int = 1_000_000
    max_concurrent: int = 64
    trajectories_dir: Path | None = None
    closers: tuple[Any, ...] = ()
    """Objects with an async `aclose()` (the pool, HTTP backends) closed at shutdown."""


def create_app(settings: ServeSettings) -> Any:
    """The ASGI app: the routes behind the key and body-size layers."""
    slots = Slots(settings.max_concurrent)
    served = settings.served

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        log.info("serving %s (%d tools; keys: %s)", ", ".join(served.model_ids), len(served.tools),
                 f"{len(settings.keys)} configured" if not settings.keys.open else "none (open, local only)")
        yield
        for closer in settings.closers:
            await closer.aclose()
        log.info("shut down")

    app = FastAPI(title="orchestra", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    record = _recorder(settings.trajectories_dir)
    app.include_router(viewer_router(lambda request: _served_run(settings.trajectories_dir,
                                                                 request.scope["state"]["account"]),
                                     "orchestra serve: episodes"))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(m) for m in served.model_ids]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> Any:
        if model_id not in served.model_ids:
            return error_response(RequestError(404, f"The model {model_id!r} does not exist.", code="model_not_found"))
        return _model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        account = request.scope["state"]["account"]
        try:
            request_ = parse_body(await request.body(), ChatRequest)
            job = prepare(request_, served, account, f"chatcmpl-{uuid.uuid4().hex}")
        except BodyTooLarge:
            return JSONResponse(too_large_body(settings.max_body_bytes), 413, {"Connection": "close"})
        except RequestError as exc:
            return error_response(exc)
        if account.budget.remaining_usd <= 0:
            return error_response(
                RequestError(402, "This API key's budget is spent.", "insufficient_quota", "insufficient_quota"))
        if not slots.try_acquire():
            return JSONResponse(error_body(f"The server is running its limit of {slots.capacity} episodes; retry "
                                           "shortly.", "server_busy", "concurrency_limit"), 503,
                                {"Retry-After": "1"})
        return EpisodeResponse(job, served, request_.model, stream=request_.stream,
                               include_usage=request_.include_usage, record=record, release=slots.release)

    return guarded(app, settings.keys, settings.max_body_bytes)


def _recorder(folder: Path | None) -> Callable[[Trajectory, EpisodeJob], Awaitable[None]]:
    """What `EpisodeResponse` calls with each finished episode: append it, stamped with its account and
    preference, to `folder/trajectories.jsonl` (nothing without a folder)."""

    async def record(trajectory: Trajectory, job: EpisodeJob) -> None:
        if folder is None:
            return
        p = job.preferences
        preferences = None if p is None else {"instruction": p.describe(), "outcome": p.outcome, "cost": p.cost,
                                              "latency": p.latency, "tool_weights": dict(p.tool_weights)}
        stamped = replace(trajectory, metadata={**trajectory.metadata, "account": job.account.id,
                                                "served": True, "preferences": preferences})
        await asyncio.to_thread(append_trajectory, folder / TRAJECTORIES, stamped)

    return record


def _served_run(folder: Path | None, account: Account) -> list[RunItem]:
    """The served episodes `account` may see: its own (all of them on an open server)."""
    if folder is None or not (folder / TRAJECTORIES).is_file():
        return []
    items = load_run(folder / TRAJECTORIES)
    if account is OPEN:
        return items
    return [i for i in items if i.trajectory.metadata.get("account") == account.id]


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "orchestra"}
