"""OpenAICompatBackend under faults, against the scripted OpenAI-compatible server over real HTTP on 127.0.0.1.

Ids refer to docs RELIABILITY.md: F1 down, F2 black hole, F4 429 storm, F5 circuit breaker, F6 random 5xx and
non-retried 4xx, F8 truncated stream, F9 huge response. Timeouts and backoffs are tiny so every test takes well
under a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from orchestra.backends.base import Sampling, estimate_prompt_tokens
from orchestra.backends.retry import CircuitBreaker, RateLimiter, RetryPolicy, parse_retry_after_s
from orchestra.errors import BackendError, CircuitOpenError, ContextLengthError
from orchestra.rollout.budget import Budget
from orchestra.types import Termination, Usage
from tests import openai_kit
from tests.openai_kit import ADD, ASK, _episode
from tests.servers.scripted_openai import (
    Fault,
    Reply,
    always,
    flaky,
    sequence,
    tool_then_answer,
    unused_port,
)

server, make = openai_kit.server, openai_kit.make  # the kit's fixtures, used by name

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
