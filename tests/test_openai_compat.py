"""OpenAICompatBackend against the scripted OpenAI-compatible server over real HTTP on 127.0.0.1.

Ids refer to docs RELIABILITY.md: F1 down, F2 black hole, F4 429 storm, F5 circuit breaker, F6 random 5xx and
non-retried 4xx, F8 truncated stream, F9 huge response, F11 price table, K1 planted key, K2 Authorization header.
Timeouts and backoffs are tiny so every test takes well under a few seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import traceback
import tracemalloc
from importlib import resources
from pathlib import Path

import pytest
import yaml

from orchestra.backends.base import ChatBackend, Sampling, estimate_prompt_tokens
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice, PriceTable
from orchestra.backends.retry import CircuitBreaker, RateLimiter, RetryPolicy, parse_retry_after_s
from orchestra.errors import BackendError, CircuitOpenError, ConfigError, ContextLengthError
from orchestra.preferences import Limits
from orchestra.rollout.budget import Budget
from orchestra.rollout.episode import run_episode
from orchestra.task import Task
from orchestra.tools.spec import ToolSpec, tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message, Termination, Usage
from tests.servers.scripted_openai import (
    Fault,
    Reply,
    ScriptedOpenAIServer,
    always,
    flaky,
    sequence,
    tool_then_answer,
    unused_port,
)

PRICE = ModelPrice(1.0, 2.0)
FAST = dict(timeout_s=2.0, max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.04)
ASK = [Message("user", "What is 2 + 3?")]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = tool(add)


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as srv:
        yield srv


@pytest.fixture
async def make():
    """Backends built by the test, closed at teardown."""
    built: list[OpenAICompatBackend] = []

    def factory(base_url: str, **kwargs) -> OpenAICompatBackend:
        options = {"price": PRICE, **FAST, **kwargs}
        backend = OpenAICompatBackend(options.pop("model", "m"), base_url, **options)
        built.append(backend)
        return backend

    yield factory
    for backend in built:
        await backend.aclose()


def _episode(backend, **kwargs):
    return run_episode(Task("t1", "What is 2 + 3?"), backend, Toolbox.of([ADD]), **kwargs)


def _dump(trajectory) -> str:
    return json.dumps(dataclasses.asdict(trajectory), default=str)


# ---- the happy paths ------------------------------------------------------------------------------------------


async def test_structured_tool_calls_and_request_shape(server, make):
    server.handler = tool_then_answer("add", {"a": 2, "b": 3}, usage=(40, 7))
    backend = make(server.base_url)
    assert isinstance(backend, ChatBackend)
    completion = await backend.complete(ASK, [ADD.spec], Sampling(max_tokens=64, seed=3, stop=("END",)))
    (call,) = completion.tool_calls
    assert (call.name, call.arguments, call.error) == ("add", {"a": 2, "b": 3}, None)
    assert completion.usage == Usage(40, 7)
    assert completion.cost_usd == pytest.approx((40 * 1.0 + 7 * 2.0) / 1e6, abs=1e-12)
    assert completion.finish_reason == "tool_calls" and completion.model == "m" and completion.latency_s > 0
    (seen,) = server.requests
    assert seen.body["model"] == "m" and seen.body["max_tokens"] == 64 and seen.body["seed"] == 3
    assert seen.body["stop"] == ["END"] and seen.body["messages"] == [m.to_openai() for m in ASK]
    assert seen.body["tools"] == [ADD.spec.to_openai()]
    assert "authorization" not in seen.headers and "stream" not in seen.body


async def test_stream_accumulates_text_tool_calls_and_usage(server, make):
    backend = make(server.base_url, stream=True)
    server.handler = tool_then_answer("add", {"a": 2, "b": 3}, usage=(30, 9))
    completion = await backend.complete(ASK, [ADD.spec], Sampling())
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert completion.usage == Usage(30, 9)
    server.handler = always(Reply(content="a streamed answer in several pieces", usage=(12, 6)))
    completion = await backend.complete(ASK, [], Sampling())
    assert completion.text == "a streamed answer in several pieces" and completion.finish_reason == "stop"
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_hermes_blocks_in_content_are_parsed_as_a_fallback(server, make):
    server.handler = tool_then_answer("add", {"a": 1, "b": 1}, hermes=True)
    completion = await make(server.base_url).complete(ASK, [ADD.spec], Sampling())
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("add", {"a": 1, "b": 1})]
    assert "<tool_call>" not in completion.text


@pytest.mark.parametrize("stream", [False, True])
async def test_multi_turn_episode_through_the_backend(server, make, stream):
    server.handler = tool_then_answer("add", {"a": 2, "b": 3}, answer="The answer is 5.", usage=(100, 20))
    backend = make(server.base_url, stream=stream)
    trajectory = await _episode(backend)
    assert trajectory.termination is Termination.FINAL_MESSAGE
    assert trajectory.final_answer == "The answer is 5."
    assert len(trajectory.turns) == 2 and trajectory.observations[0].content == "5"
    assert trajectory.cost_usd == pytest.approx(2 * (100 * 1.0 + 20 * 2.0) / 1e6, abs=1e-12)
    first, second = server.requests
    assert first.body["tools"][0]["function"]["name"] == "add"
    assistant, tool_message = second.messages[-2:]
    call_id = assistant["tool_calls"][0]["id"]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call_id and "5" in tool_message["content"]


async def test_backend_survives_a_new_event_loop(server):
    backend = OpenAICompatBackend("m", server.base_url, price=PRICE, **FAST)
    for _ in range(2):  # each run gets its own loop; the backend must not reuse the dead loop's connections
        completion = await asyncio.to_thread(asyncio.run, backend.complete(ASK, [], Sampling()))
        assert completion.text == "ok"


# ---- F1, F2: down and black hole ------------------------------------------------------------------------------


async def test_f1_endpoint_down_bounded_retries_then_error_and_zero_cost(make, caplog):
    backend = make(f"http://127.0.0.1:{unused_port()}/v1", max_attempts=4, backoff_base_s=0.05, backoff_cap_s=0.2)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING), pytest.raises(BackendError) as info:
        await backend.complete(ASK, [], Sampling())
    elapsed = time.perf_counter() - started
    assert info.value.retryable and info.value.status is None and info.value.billed_usage is None
    assert "after 4 attempts" in str(info.value)
    assert sum("retrying in" in r.getMessage() for r in caplog.records) == 3
    assert backend.retry.min_total_backoff_s() <= elapsed < 2.0  # backed off, and bounded

    budget = Budget(1.0)
    trajectory = await _episode(backend, budget=budget)
    assert trajectory.termination is Termination.ERROR and trajectory.cost_usd == 0.0
    assert budget.spent_usd == 0.0 and budget.reserved_usd == 0.0


async def test_f2_black_hole_per_attempt_timeout(server, make):
    server.handler = always(Fault("blackhole"))
    backend = make(server.base_url, timeout_s=0.3, max_attempts=3, backoff_base_s=0.001, backoff_cap_s=0.002)
    started = time.perf_counter()
    with pytest.raises(BackendError, match="timeout"):
        await backend.complete(ASK, [], Sampling())
    elapsed = time.perf_counter() - started
    assert 0.3 * 3 * 0.95 <= elapsed <= 0.3 * 3 + 0.5
    assert len(server.requests) == 3


# ---- F4: 429 with Retry-After, client-side rate limit ------------------------------------------------------------


async def test_f4_retry_after_is_honoured(server, make):
    server.handler = sequence(Fault("status", status=429, retry_after="0.3"),
                              Fault("status", status=429, retry_after="0.3"))
    completion = await make(server.base_url).complete(ASK, [], Sampling())
    assert completion.text == "ok"
    times = [r.time_s for r in server.requests]
    assert len(times) == 3 and all(b - a >= 0.29 for a, b in zip(times, times[1:], strict=False))


async def test_f4_retry_after_beyond_the_cap_fails_at_once(server, make):
    server.handler = always(Fault("status", status=429, retry_after="3600"))
    started = time.perf_counter()
    with pytest.raises(BackendError) as info:
        await make(server.base_url, max_retry_after_s=5.0).complete(ASK, [], Sampling())
    assert info.value.status == 429 and info.value.retryable
    assert len(server.requests) == 1 and time.perf_counter() - started < 1.0


async def test_f4_429_storm_keeps_the_request_rate_under_the_limit(server, make):
    rate_per_s = 40.0
    server.handler = flaky(0.5, Fault("status", status=429, retry_after="0.05"), seed=3)
    backend = make(server.base_url, max_requests_per_s=rate_per_s, max_attempts=10, breaker_threshold=50)
    sent: list[float] = []
    acquire = backend.limiter.acquire

    async def recording_acquire() -> float:  # the moment the limiter releases each attempt to the network
        # (when it was asked plus the delay it imposed: on a loaded machine a task may wake later than released,
        # and late wake-ups would bunch recorded times without the limiter having let more through)
        asked = time.monotonic()
        waited = await acquire()
        sent.append(asked + waited)
        return waited

    backend.limiter.acquire = recording_acquire
    results = await asyncio.gather(*(backend.complete(ASK, [], Sampling()) for _ in range(30)))
    assert all(c.text == "ok" for c in results)
    arrived = sorted(r.time_s for r in server.requests)
    assert len(arrived) == len(sent) > 40  # the storm really happened, and every attempt took a token
    window_s = 0.25
    busiest = max(sum(1 for t in sent if start <= t < start + window_s) for start in sent)
    assert busiest <= rate_per_s * window_s + 1  # a bucket of one token: one more only at a window's edge
    # At the server, arrival times jitter (connection reuse, thread scheduling); the overall rate still holds.
    assert len(arrived) <= rate_per_s * (arrived[-1] - arrived[0]) + 2


def test_rate_limiter_spaces_requests_and_refills_a_burst():
    now = [0.0]
    limiter = RateLimiter(10.0, burst=3, clock=lambda: now[0])
    assert [round(limiter.reserve_delay_s(), 6) for _ in range(5)] == [0.0, 0.0, 0.0, 0.1, 0.2]
    now[0] = 10.0
    assert [round(limiter.reserve_delay_s(), 6) for _ in range(4)] == [0.0, 0.0, 0.0, 0.1]
    limiter.defer(2.0)
    assert limiter.reserve_delay_s() == pytest.approx(2.0)


def test_retry_policy_backoff_has_a_floor_and_a_cap_and_parses_retry_after():
    import random

    policy = RetryPolicy(max_attempts=5, backoff_base_s=0.1, backoff_cap_s=0.5)
    rng = random.Random(0)
    for index, step in enumerate([0.1, 0.2, 0.4, 0.5, 0.5]):
        delays = [policy.backoff_s(index, rng) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step and max(delays) - min(delays) > step / 4
    assert policy.min_total_backoff_s() == pytest.approx((0.1 + 0.2 + 0.4 + 0.5) / 2)
    assert parse_retry_after_s({"Retry-After": "2"}) == 2.0
    assert parse_retry_after_s({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert parse_retry_after_s({"Retry-After": "soon"}) is None and parse_retry_after_s({}) is None


# ---- F5: circuit breaker --------------------------------------------------------------------------------------


async def test_f5_circuit_opens_fails_fast_and_a_half_open_probe_recovers(server, make):
    server.handler = always(Fault("status", status=503))
    backend = make(server.base_url, max_attempts=2, breaker_threshold=3, breaker_cooldown_s=0.3)
    with pytest.raises(BackendError) as first:
        await backend.complete(ASK, [], Sampling())
    assert not isinstance(first.value, CircuitOpenError) and len(server.requests) == 2
    with pytest.raises(CircuitOpenError):  # third consecutive failure opens it mid-call
        await backend.complete(ASK, [], Sampling())
    assert len(server.requests) == 3 and backend.breaker.state == "open"

    started = time.perf_counter()
    for _ in range(20):
        with pytest.raises(CircuitOpenError, match="circuit open"):
            await backend.complete(ASK, [], Sampling())
    assert time.perf_counter() - started < 0.1 and len(server.requests) == 3  # fast, and nothing was sent

    await asyncio.sleep(0.35)
    with pytest.raises(CircuitOpenError):  # the probe fails: open again for a fresh cooldown
        await backend.complete(ASK, [], Sampling())
    assert len(server.requests) == 4 and backend.breaker.state == "open"

    await asyncio.sleep(0.35)
    server.handler = always(Reply(content="back"))
    assert (await backend.complete(ASK, [], Sampling())).text == "back"
    assert backend.breaker.state == "closed" and len(server.requests) == 5


def test_breaker_lets_exactly_one_probe_through_when_half_open():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert [breaker.allow() for _ in range(5)] == [True, False, False, False, False]
    breaker.release_probe()  # a cancelled probe hands the turn to the next caller
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


# ---- F6: random 5xx; 4xx not retried ---------------------------------------------------------------------------


async def test_f6_thirty_percent_5xx_still_finishes_99_percent_of_episodes(server, make):
    answers = tool_then_answer("add", {"a": 2, "b": 3}, answer="5")
    server.handler = flaky(0.3, Fault("status", status=503), seed=1, otherwise=answers)
    # The breaker and the per-attempt deadline are not under test here: with 100 concurrent episodes on a loaded
    # 2-core machine, 8 consecutive injected 503s or a 2 s stall can happen by chance and would fail episodes.
    backend = make(server.base_url, max_attempts=6, backoff_base_s=0.002, backoff_cap_s=0.01, timeout_s=20.0,
                   breaker_threshold=1000)
    # With 6 attempts a call is lost with probability 0.3**6 (0.07%), an episode of two calls with 0.15%. Over 400
    # episodes the 1% allowance is 4 failures; more than that happens by chance about once in 2,000 runs (100
    # episodes allowing 1 failure flaked about once in 100).
    episodes = 400
    trajectories = await asyncio.gather(*(_episode(backend) for _ in range(episodes)))
    lost = [t.termination for t in trajectories if not (t.termination is Termination.FINAL_MESSAGE
                                                         and t.final_answer == "5")]
    assert len(lost) <= 0.01 * episodes, lost
    finished = episodes - len(lost)
    failures = len(server.requests) - 2 * finished
    assert failures >= 0.2 * len(server.requests)  # the faults really were injected


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_f6_client_errors_are_not_retried(server, make, status):
    server.handler = always(Fault("status", status=status))
    backend = make(server.base_url, max_attempts=5, breaker_threshold=1)
    with pytest.raises(BackendError) as info:
        await backend.complete(ASK, [], Sampling())
    assert info.value.status == status and not info.value.retryable and "not retried" in str(info.value)
    assert len(server.requests) == 1
    assert backend.breaker.state == "closed"  # the endpoint answered: a bad request is not an outage


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
async def test_transient_statuses_are_retried(server, make, status):
    server.handler = always(Fault("status", status=status))
    with pytest.raises(BackendError) as info:
        await make(server.base_url, max_attempts=3).complete(ASK, [], Sampling())
    assert info.value.status == status and info.value.retryable and len(server.requests) == 3


async def test_context_overflow_ends_the_episode_with_context_termination(server, make):
    body = json.dumps({"error": {"message": "This model's maximum context length is 8192 tokens",
                                 "code": "context_length_exceeded"}})
    server.handler = always(Fault("status", status=400, body=body))
    trajectory = await _episode(make(server.base_url))
    assert trajectory.termination is Termination.CONTEXT and len(server.requests) == 1
    with pytest.raises(ContextLengthError):
        await make(server.base_url).complete(ASK, [], Sampling())


# ---- F8: truncated stream ---------------------------------------------------------------------------------------


async def test_f8_truncated_stream_is_an_error_with_billed_usage(server, make):
    server.handler = always(Fault("truncate", keep_chunks=4))
    backend = make(server.base_url, stream=True)
    with pytest.raises(BackendError, match="truncated stream") as info:
        await backend.complete(ASK, [ADD.spec], Sampling(max_tokens=256))
    billed = info.value.billed_usage
    assert billed is not None and billed.input_tokens == estimate_prompt_tokens(ASK, [ADD.spec])
    assert 0 < billed.output_tokens <= 256
    assert len(server.requests) == 1  # a paid generation is not sent again

    budget = Budget(1.0)
    trajectory = await _episode(backend, budget=budget)
    assert trajectory.termination is Termination.ERROR and trajectory.final_answer is None
    assert budget.spent_usd > 0 and budget.reserved_usd == 0.0


async def test_f8_stream_stalled_past_the_deadline_is_billed_and_not_resent(server, make):
    server.handler = always(Fault("stall", keep_chunks=3))
    backend = make(server.base_url, stream=True, timeout_s=0.3)
    started = time.perf_counter()
    with pytest.raises(BackendError, match="truncated stream.*timeout_s") as info:
        await backend.complete(ASK, [], Sampling())
    assert time.perf_counter() - started < 0.3 + 0.3
    assert info.value.billed_usage is not None and info.value.billed_usage.output_tokens > 0
    assert len(server.requests) == 1


async def test_stream_cut_before_any_event_is_retried_as_a_connection_failure(server, make):
    server.handler = sequence(Fault("truncate", keep_chunks=0), then=Reply(content="second try"))
    completion = await make(server.base_url, stream=True).complete(ASK, [], Sampling())
    assert completion.text == "second try" and len(server.requests) == 2


async def test_f8_cut_plain_body_is_billed_at_its_worst_case_and_not_resent(server, make):
    """A 2xx body comes after the generation: losing it mid-body loses the answer, not the bill (F14's plain case)."""
    server.handler = sequence(Fault("truncate"), then=Reply(content="whole"))
    with pytest.raises(BackendError, match="body cut after a success status") as info:
        await make(server.base_url).complete(ASK, [], Sampling(max_tokens=300))
    assert info.value.billed_usage == Usage(estimate_prompt_tokens(ASK, []), 300)
    assert len(server.requests) == 1  # the paid generation was not sent again under the same reservation


# ---- F9: a 10 MB response ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def huge_server():
    """The huge-response server in its own process, so the memory measured below is the client's alone."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.scripted_openai", "--script", "huge"], cwd=root,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("stream", [False, True])
async def test_f9_ten_megabyte_response_is_capped_with_bounded_memory(huge_server, make, stream):
    backend = make(huge_server, max_response_chars=50_000, stream=stream, timeout_s=10.0)
    await backend.complete(ASK, [], Sampling())  # warm the connection pool outside the measurement
    tracemalloc.start()
    try:
        completion = await backend.complete(ASK, [], Sampling(max_tokens=4096))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert completion.finish_reason == "length"
    assert 50_000 <= len(completion.text) <= 50_000 + 100 and completion.text.endswith("characters]")
    assert peak_bytes < 4 * 2**20  # the body is 10 MB; reading it whole would cost at least that
    if stream:  # closed early: billed an estimate bounded by max_tokens
        assert completion.usage.output_tokens <= 4096
    else:  # read to the end: the usage the server reported is billed
        assert completion.usage == Usage(120, 2_500_000)
        assert completion.cost_usd == pytest.approx((120 * 1.0 + 2_500_000 * 2.0) / 1e6, abs=1e-9)


# ---- F11: prices ------------------------------------------------------------------------------------------------


async def test_f11_every_priced_model_costs_exactly_the_table_price(server, make):
    raw = yaml.safe_load(resources.files("orchestra").joinpath("data/prices.yaml").read_text())["models"]
    table = PriceTable.default()
    assert set(raw) == set(table.models) and raw
    server.handler = always(Reply(content="priced", usage=(1234, 5678)))
    for name, entry in raw.items():
        for stream in (False, True):
            backend = OpenAICompatBackend.from_price_table(name, server.base_url, table, stream=stream, **FAST)
            completion = await backend.complete(ASK, [], Sampling())
            expected = (1234 * float(entry["input"]) + 5678 * float(entry["output"])) / 1e6
            assert abs(completion.cost_usd - expected) <= 1e-9, name
            await backend.aclose()
    with pytest.raises(ConfigError, match="no price"):
        OpenAICompatBackend.from_price_table("mystery-model", server.base_url, table)


def test_max_cost_is_prompt_estimate_times_input_plus_max_tokens_times_output():
    backend = OpenAICompatBackend("m", "http://127.0.0.1:9/v1", price=ModelPrice(3.0, 15.0))
    sampling = Sampling(max_tokens=700)
    expected = (estimate_prompt_tokens(ASK, [ADD.spec]) * 3.0 + 700 * 15.0) / 1e6
    assert backend.max_cost_usd(ASK, [ADD.spec], sampling) == pytest.approx(expected, abs=1e-12)


# ---- K1, K2: secrets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_name,key", [
    ("ORCH_FAKE_OPENAI_API_KEY", "sk-proj-" + secrets.token_urlsafe(32)),
    ("ORCH_FAKE_CREDENTIAL", "zq" + secrets.token_hex(20)),  # a name and shape the generic rules do not know
], ids=["sk-key", "unknown-shape"])
async def test_k2_echoed_authorization_header_is_redacted(server, make, monkeypatch, caplog, env_name, key):
    monkeypatch.setenv(env_name, key)
    backend = make(server.base_url, api_key_env=env_name, max_attempts=2)
    for status in (401, 503):
        server.handler = always(Fault("status", status=status, echo_headers=True))
        with caplog.at_level(logging.DEBUG), pytest.raises(BackendError) as info:
            await backend.complete(ASK, [], Sampling())
        text = "".join(traceback.format_exception(info.value))
        assert "Bearer ***" in str(info.value) and key not in text
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"  # the key was really sent
    assert "Bearer ***" in caplog.text and key not in caplog.text


async def test_k1_planted_key_never_reaches_completion_trajectory_logs_or_errors(server, make, monkeypatch, caplog):
    key = "sk-live-" + secrets.token_urlsafe(40)
    monkeypatch.setenv("ORCH_PLANTED_API_KEY", key)

    def leaky(request):  # a hostile server echoing the credential into everything it writes
        auth = request.headers.get("authorization", "")
        if any(m.get("role") == "tool" for m in request.messages):
            return Reply(content=f"final, and your header was {auth}")
        call = {"id": "c1", "type": "function",
                "function": {"name": "add", "arguments": json.dumps({"a": 1, "b": 2, "note": auth})}}
        return Reply(content=f"calling with {auth}", tool_calls=(call,))

    server.handler = leaky
    backend = make(server.base_url, api_key_env="ORCH_PLANTED_API_KEY")
    with caplog.at_level(logging.DEBUG):
        completion = await backend.complete(ASK, [ADD.spec], Sampling())
        trajectory = await _episode(backend)
        server.handler = always(Fault("status", status=500, echo_headers=True))
        failed = await _episode(backend)
        with pytest.raises(BackendError) as info:
            await backend.complete(ASK, [], Sampling())
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"
    assert trajectory.termination is Termination.FINAL_MESSAGE and failed.termination is Termination.ERROR
    leaks = [repr(completion), _dump(trajectory), _dump(failed), caplog.text, repr(backend), str(vars(backend)),
             "".join(traceback.format_exception(info.value))]
    assert all(key not in text for text in leaks)
    assert "***" in completion.text and "***" in trajectory.final_answer


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "localhost:8000", "ftp://host/v1", "http://"])
def test_a_base_url_without_an_http_scheme_is_a_config_error_not_a_transient_failure(url):
    with pytest.raises(ConfigError, match="absolute http"):
        OpenAICompatBackend("m", url, price=PRICE)


def test_api_key_env_must_be_a_name_and_must_be_set(monkeypatch):
    pasted = "sk-proj-" + "a" * 40
    with pytest.raises(ConfigError) as info:
        OpenAICompatBackend("m", "http://127.0.0.1:9/v1", price=PRICE, api_key_env=pasted)
    assert pasted not in str(info.value)
    monkeypatch.delenv("ORCH_UNSET_KEY", raising=False)
    backend = OpenAICompatBackend("m", "http://u:pw@127.0.0.1:9/v1", price=PRICE, api_key_env="ORCH_UNSET_KEY")
    with pytest.raises(ConfigError, match="ORCH_UNSET_KEY is not set"):
        asyncio.run(backend.complete(ASK, [], Sampling()))
    assert "pw" not in repr(backend) and "ORCH_UNSET_KEY" in repr(backend)


async def test_tool_spec_round_trip_matches_what_the_server_saw(server, make):
    spec = ToolSpec.from_openai(ADD.spec.to_openai())
    await make(server.base_url).complete(ASK, [spec], Sampling())
    assert server.requests[0].body["tools"][0]["function"]["parameters"] == ADD.spec.parameters


async def test_episode_budget_reserves_the_worst_case_and_settles_the_real_cost(server, make):
    server.handler = always(Reply(content="done", usage=(10, 5)))
    budget = Budget(1.0)
    trajectory = await _episode(make(server.base_url), budget=budget, limits=Limits(max_turns=2))
    assert trajectory.termination is Termination.FINAL_MESSAGE
    assert budget.spent_usd == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6) and budget.reserved_usd == 0.0
