"""OpenAICompatBackend: one client for every OpenAI-compatible `/v1/chat/completions` endpoint.

OpenAI, vLLM, SGLang, llama.cpp server, OpenRouter and NIM differ only in `base_url`, the model name and the key.

Transport: httpx2 directly, not the `openai` SDK. The SDK reads every response body whole (successes and error
bodies) before our code sees it, so a 10 MB answer would be in memory before it could be capped (F9); it also owns
retries and timeouts we would have to disable, and builds pydantic objects per chunk that the hot path does not need.
httpx streams give bounded reads for both plain and SSE responses (`openai_wire`). httpx2 is the maintained
successor of httpx (same API) that the `openai` SDK itself depends on since 3.x; httpx 0.28's connection pool is
quadratic in the number of connections (measured here: 1,000 concurrent requests over 100 connections took 22.5 s
with httpx 0.28 and 1.6 s with httpx2), which matters when a thousand episodes share one backend. Plain httpx is used
only where httpx2 is not installed.

Invariants
- The API key is read from the environment variable named by `api_key_env` at each call and kept only in the
  request's headers: it is not stored on the backend, and it never appears in `repr`, logs, exception text or the
  returned `Completion` (error text passes through `orchestra.redact`, and a server that echoes the key has it
  masked out of the reply).
- Retries live here and only here (`retry.RetryPolicy`): connection errors, timeouts, 408/409/429/5xx; never other
  4xx. Every attempt has a deadline of `timeout_s` covering the whole response (connect, wait, body or stream), so a
  black-holed endpoint costs at most `timeout_s x max_attempts` plus backoff. Every attempt takes a token from the
  instance's rate limiter and asks its circuit breaker first (`CircuitOpenError` fails fast while it is open).
- After the last attempt: `BackendError(status, retryable)`; `billed_usage` is None (nothing billed, $0) unless the
  provider produced tokens. A billed failure is never sent again, because the budget reserved one generation for
  this call and the failed one was already paid (the caller may try again under a new reservation):
  - a stream cut (or stalled past the deadline) after its first event and before its final chunk: billed the usage it
    reported or else an upper-leaning estimate from the text received;
  - a plain body cut (or stalled) after a 2xx status: the server only answers once it has generated, so the whole
    generation was billed; its usage was in the part lost, so it is billed at the worst case (prompt bound,
    `max_tokens` of output).
  A stream cut before any event, or a connection lost before any status, is an ordinary transient failure: retried.
- Output is held to the request's `max_tokens` where the client can see it: a stream that delivers more text pieces
  than `max_tokens` (every piece holds at least one token) is closed at once, which also stops a real server
  generating, and ends as a server honouring the limit would (finish reason `length`, `max_tokens` of output
  billed). A non-streamed body is generated before it is read: its reported usage is billed as reported, and a
  budget books anything beyond the call's reservation as disputed (`rollout.budget`).
- Text is capped at `max_response_chars` (finish reason `length`); a capped stream is closed at once, like above.
- The reply becomes a `Completion` in `openai_completion` (pure): key scrubbed, call ids filled, tool calls read
  from the text only when the request offered tools, cost = `price.cost_usd(usage)`, and a server that reports no
  usage billed an upper-leaning estimate (the prompt bound, and the output's UTF-8 bytes capped at `max_tokens`).
- `base_url` must be an absolute http(s) URL: anything else is a `ConfigError` at construction, never a retried
  transport error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

try:
    import httpx2 as httpx
except ImportError:  # an older `openai` that still depends on plain httpx
    import httpx  # type: ignore[no-redef]

from orchestra.backends.base import Sampling, worst_case_cost_usd
from orchestra.backends.openai_completion import estimate_usage, to_completion
from orchestra.backends.openai_wire import (
    LineTooLong,
    Reply,
    StreamAccumulator,
    WireError,
    check_base_url,
    error_message,
    is_reasoning_model,
    parse_body,
    read_bounded,
    request_body,
    sse_data,
)
from orchestra.backends.pricing import ModelPrice, PriceTable
from orchestra.backends.retry import (
    CircuitBreaker,
    RateLimiter,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after_s,
)
from orchestra.errors import BackendError, CircuitOpenError, ConfigError, ContextLengthError
from orchestra.redact import redact
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message, Usage

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTEXT_HINTS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens")
_ERROR_BODY_BYTES = 16 * 1024


class _Failure(Exception):
    """One failed attempt, classified: `retryable`, what the server asked us to wait, what was billed.

    `final`: do not retry even if retryable (tokens were billed, and a second generation was never reserved).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 retry_after_s: float | None = None, billed_usage: Usage | None = None, final: bool = False,
                 context: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.billed_usage = billed_usage
        self.final = final
        self.context = context


class OpenAICompatBackend:
    """A `ChatBackend` over HTTP. `model` is the priced name; `api_model` the name the server knows (default: same).

    `reasoning`: whether the served model is an OpenAI reasoning model (sent `max_completion_tokens`, never
    `temperature`/`top_p`/`stop`); None decides by `api_model`'s name (`openai_wire.REASONING_PREFIXES`).
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        price: ModelPrice,
        api_key_env: str | None = None,
        api_model: str | None = None,
        timeout_s: float = 60.0,
        max_attempts: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        max_retry_after_s: float = 60.0,
        max_requests_per_s: float | None = None,
        burst: int = 1,
        breaker_threshold: int = 8,
        breaker_cooldown_s: float = 30.0,
        max_response_chars: int = 100_000,
        stream: bool = False,
        max_connections: int = 100,
        extra_body: Mapping[str, Any] | None = None,
        reasoning: bool | None = None,
    ):
        if api_key_env is not None and (not _ENV_NAME.match(api_key_env) or redact(api_key_env) != api_key_env):
            # Never echo the value: a key pasted here by mistake must not end up in the error either.
            raise ConfigError("api_key_env: must be the NAME of an environment variable holding the key, not the key")
        if timeout_s <= 0 or max_response_chars < 1:
            raise ConfigError("timeout_s must be > 0 and max_response_chars >= 1")
        check_base_url(base_url)
        self._model = model
        self.api_model = api_model or model
        self.base_url = base_url.rstrip("/")
        self.price = price
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(max_attempts, backoff_base_s, backoff_cap_s, max_retry_after_s)
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        self.limiter = RateLimiter(max_requests_per_s, burst) if max_requests_per_s else None
        self.max_response_chars = max_response_chars
        self.stream = stream
        self.max_connections = max_connections
        self.extra_body = dict(extra_body or {})
        self.reasoning = is_reasoning_model(self.api_model) if reasoning is None else reasoning
        self._rng = random.Random()
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_price_table(
        cls, model: str, base_url: str, table: PriceTable | None = None, **kwargs: Any
    ) -> OpenAICompatBackend:
        """A backend priced from `table` (default: the packaged one); an unpriced model is a `ConfigError`."""
        return cls(model, base_url, price=(table or PriceTable.default()).model(model), **kwargs)

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return (
            f"OpenAICompatBackend(model={self._model!r}, base_url={redact(self.base_url)!r}, "
            f"api_key_env={self.api_key_env!r}, stream={self.stream}, reasoning={self.reasoning})"
        )

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        return worst_case_cost_usd(self.price, messages, tools, sampling)

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling
    ) -> Completion:
        started = time.perf_counter()
        key = self._api_key()
        body = request_body(self.api_model, messages, tools, sampling, stream=self.stream,
                            extra_body=self.extra_body, reasoning=self.reasoning)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        reply = await self._with_retries(body, headers, key,
                                         lambda text: estimate_usage(messages, tools, text, sampling),
                                         sampling.max_tokens)
        return to_completion(reply, key=key, model=self._model, price=self.price, messages=messages, tools=tools,
                             sampling=sampling, max_response_chars=self.max_response_chars,
                             latency_s=time.perf_counter() - started)

    async def aclose(self) -> None:
        if self._http is not None and not self._http.is_closed:
            await self._http.aclose()
        self._http = None

    async def __aenter__(self) -> OpenAICompatBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _with_retries(self, body: dict[str, Any], headers: dict[str, str], key: str | None, estimate,
                            max_tokens: int) -> Reply:
        """Attempts until success, a non-retryable failure, a billed failure or the last attempt."""
        failure: _Failure | None = None
        for attempt in range(self.retry.max_attempts):
            if not self.breaker.allow():
                raise self._circuit_open(failure, key)
            client = self._client()  # built before the token is taken: creating one costs ~20 ms (TLS context)
            if self.limiter is not None:
                await self.limiter.acquire()
            progress = StreamAccumulator(self.max_response_chars, max_pieces=max_tokens)  # what arrived in time
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._attempt(client, body, headers, progress, estimate)
            except _Failure as exc:
                failure = exc
            except TimeoutError:
                why = f"no complete answer within timeout_s={self.timeout_s:g}"
                if progress.events:
                    failure = self._cut_stream(progress, why, estimate)
                elif progress.answered:
                    failure = _cut_body(why, estimate, max_tokens)
                else:
                    failure = _Failure(why)
            except asyncio.CancelledError:
                self.breaker.release_probe()
                raise
            else:
                self.breaker.record_success()
                return reply
            if not failure.retryable:
                self.breaker.record_success()  # the endpoint answered; the request itself was wrong
                raise self._error(failure, key, attempt + 1)
            self.breaker.record_failure()
            if failure.final or attempt + 1 == self.retry.max_attempts:
                break
            delay_s = self.retry.backoff_s(attempt, self._rng)
            if failure.retry_after_s is not None:
                if failure.retry_after_s > self.retry.max_retry_after_s:
                    break
                delay_s = max(delay_s, failure.retry_after_s)
                if self.limiter is not None:
                    self.limiter.defer(failure.retry_after_s)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.3f s", self._model, attempt + 1,
                        self.retry.max_attempts, redact(failure.message, extra_secrets=_secrets(key)), delay_s)
            await asyncio.sleep(delay_s)
        assert failure is not None
        raise self._error(failure, key, attempt + 1)

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str],
                       progress: StreamAccumulator, estimate) -> Reply:
        url = f"{self.base_url}/chat/completions"
        try:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    raise await _status_failure(response)
                if self.stream:
                    return await self._read_stream(response, progress, estimate)
                progress.answered = True  # a plain 2xx comes after the generation: from here on it is billed
                raw = await read_bounded(response.aiter_bytes(), head_bytes=6 * self.max_response_chars + 65536)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            why = f"timeout ({type(exc).__name__})" if isinstance(exc, httpx.TimeoutException) \
                else f"{type(exc).__name__}: {exc}"
            if progress.answered:
                raise _cut_body(why, estimate, progress.max_pieces) from None
            raise _Failure(why) from None
        try:
            return parse_body(raw, max_chars=self.max_response_chars)
        except WireError as exc:
            raise _Failure(str(exc), status=response.status_code) from None

    async def _read_stream(self, response: httpx.Response, acc: StreamAccumulator, estimate) -> Reply:
        try:
            async for data in sse_data(response.aiter_bytes(), max_line_bytes=6 * self.max_response_chars + 65536):
                acc.feed(data)
                if acc.overflow or acc.over_pieces or acc.done:
                    break  # leaving the `stream` block closes the connection: a real server stops generating
        except LineTooLong:
            acc.overflow = True
        except (httpx.TransportError, WireError) as exc:
            if not acc.events:  # cut before anything was generated: nothing billed, safe to send again
                raise _Failure(f"{type(exc).__name__}: {exc}") from None
            raise self._cut_stream(acc, f"{type(exc).__name__}: {exc}", estimate) from None
        if acc.over_pieces and not acc.complete:  # closed at max_tokens: end as an honest server would have
            return Reply(text=acc.text, raw_tool_calls=acc.raw_tool_calls(),
                         usage=Usage(estimate("").input_tokens, acc.max_pieces or 0), finish_reason="length",
                         model=acc.model)
        if not acc.complete and not acc.overflow:
            raise self._cut_stream(acc, "stream ended before its final chunk", estimate)
        return Reply(
            text=acc.text,
            raw_tool_calls=acc.raw_tool_calls(),
            usage=acc.usage,
            finish_reason="length" if acc.overflow else (acc.finish_reason or "stop"),
            model=acc.model,
            cut=acc.overflow,
        )

    def _cut_stream(self, acc: StreamAccumulator, why: str, estimate) -> _Failure:
        received = acc.text + "".join(c["function"]["arguments"] for c in acc.raw_tool_calls())
        billed = acc.usage or estimate(received)
        return _Failure(f"truncated stream after {acc.chars} characters: {why}", billed_usage=billed, final=True)

    def _error(self, failure: _Failure, key: str | None, attempts: int) -> BackendError:
        status = f"HTTP {failure.status}" if failure.status else "no HTTP status"
        tried = f"after {attempts} attempt{'s' * (attempts > 1)}" if failure.retryable else "(not retried)"
        message = redact(f"{self._model} at {self.base_url}: {status} {tried}: {failure.message}",
                         extra_secrets=_secrets(key))
        cls = ContextLengthError if failure.context else BackendError
        return cls(message, status=failure.status, retryable=failure.retryable, billed_usage=failure.billed_usage)

    def _circuit_open(self, failure: _Failure | None, key: str | None) -> CircuitOpenError:
        last = f"; last failure: {failure.message}" if failure else ""
        message = (f"{self._model} at {self.base_url}: circuit open after {self.breaker.failure_threshold} "
                   f"consecutive failures; next probe in {self.breaker.retry_in_s():.1f} s{last}")
        return CircuitOpenError(redact(message, extra_secrets=_secrets(key)), retryable=True)

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"api_key_env: environment variable {self.api_key_env} is not set")
        return key

    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (a client's connections belong to the loop that opened them)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop or self._http.is_closed:
            limits = httpx.Limits(max_connections=self.max_connections,
                                  max_keepalive_connections=self.max_connections)
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits)
            self._http_loop = loop
        return self._http


async def _status_failure(response: httpx.Response) -> _Failure:
    """Classify an HTTP error response; reads at most a few KiB of its body."""
    raw = await read_bounded(response.aiter_bytes(), head_bytes=_ERROR_BODY_BYTES, tail_bytes=0,
                             total_bytes=_ERROR_BODY_BYTES)
    detail = error_message(raw.head)
    status = response.status_code
    context = status in (400, 413) and any(h in detail.lower() for h in _CONTEXT_HINTS)
    return _Failure(
        detail or response.reason_phrase,
        status=status,
        retryable=is_retryable_status(status) and not context,
        retry_after_s=parse_retry_after_s(response.headers),
        context=context,
    )


def _cut_body(why: str, estimate, max_tokens: int | None) -> _Failure:
    """A plain body lost after its 2xx status: the generation happened; bill its worst case, do not send again."""
    usage = Usage(estimate("").input_tokens, max_tokens or 0)
    return _Failure(f"response body cut after a success status: {why}", billed_usage=usage, final=True)


def _secrets(key: str | None) -> tuple[str, ...]:
    return (key,) if key else ()
