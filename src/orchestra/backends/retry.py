"""Retry policy, circuit breaker and client-side rate limiter for remote model endpoints (RELIABILITY F1-F6).

- `RetryPolicy`: which failures are retried and how long to wait. Retried: connection errors, timeouts, HTTP 408,
  409, 429 and 5xx. Never retried: every other 4xx (400, 401, 403, 404, 422, ...), since sending the same request
  again cannot fix it. Waits grow exponentially (`backoff_base_s * 2**n`, capped at `backoff_cap_s`) with "equal
  jitter": half the step is fixed, half random, so concurrent clients spread out yet every wait has a known floor.
  A `Retry-After` (or `retry-after-ms`) header is honoured: the wait is at least what the server asked for; a
  server asking for more than `max_retry_after_s` is not waited on (the call fails, retryable, at once).
- `CircuitBreaker`: after `failure_threshold` consecutive retryable failures (counted per HTTP attempt, across all
  calls of one backend) it opens: calls fail fast with `CircuitOpenError` without touching the network. After
  `cooldown_s` one probe is let through (half-open); its success closes the circuit, its failure re-opens it for
  another cooldown. A non-retryable answer (a 4xx) proves the endpoint is up, so it counts as a success.
- `RateLimiter`: a token bucket (`rate_per_s`, `burst` tokens) shared by every call on one backend, retries
  included, so the aggregate request rate stays under the limit. A 429's Retry-After also pauses the whole bucket
  (`defer`), so concurrent calls do not keep hammering a server that asked for quiet.

All three keep plain state guarded by a `threading.Lock` held only for arithmetic, never across an await, so they are
safe under asyncio and across event loops and threads.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """True for statuses worth sending again: 408, 409, 429 and every 5xx."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after_s(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `Retry-After` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts one call may make and how long to wait between them."""

    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 8.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0:
            raise ValueError("backoff_base_s and backoff_cap_s must be >= 0")

    def backoff_s(self, retry_index: int, rng: random.Random) -> float:
        """Wait before retry number `retry_index` (0 for the first retry): in [step/2, step], step capped."""
        step = min(self.backoff_cap_s, self.backoff_base_s * (2.0**retry_index))
        return step / 2 + rng.uniform(0.0, step / 2)

    def min_total_backoff_s(self) -> float:
        """The floor of all waits of a call that uses every attempt (for tests and for sizing timeouts)."""
        return sum(min(self.backoff_cap_s, self.backoff_base_s * 2.0**i) / 2 for i in range(self.max_attempts - 1))


class CircuitBreaker:
    """Closed -> (threshold consecutive failures) -> open -> (cooldown) -> half-open probe -> closed or open."""

    def __init__(self, failure_threshold: int = 8, cooldown_s: float = 30.0, *, clock=time.monotonic):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
                return "half_open"
            return "open"

    def retry_in_s(self) -> float:
        """Seconds until the next probe may go out (0 when closed or due)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def allow(self) -> bool:
        """May a request go out now? In half-open state exactly one caller (the probe) gets True."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probing or self._clock() - self._opened_at < self.cooldown_s:
                return False
            self._probing = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._probing = 0, None, False

    def record_failure(self) -> None:
        """A retryable failure: counts toward opening; a failed probe re-opens for a fresh cooldown."""
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probing = False

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let the next caller probe instead."""
        with self._lock:
            self._probing = False


class RateLimiter:
    """Token bucket: at most `burst` requests at once, refilled at `rate_per_s`; `acquire` sleeps for a token.

    Implemented as a schedule of send times (the generic cell rate algorithm): each caller books the next free slot
    under the lock, then sleeps until it outside the lock, so waiting callers are served in arrival order.
    """

    def __init__(self, rate_per_s: float, burst: int = 1, *, clock=time.monotonic):
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._interval_s = 1.0 / rate_per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tat_s = clock()  # "theoretical arrival time": when the bucket would next be full-minus-one
        self._paused_until_s = 0.0

    def reserve_delay_s(self) -> float:
        """Book one token; the seconds the caller must wait before sending."""
        with self._lock:
            now = self._clock()
            tolerance_s = (self.burst - 1) * self._interval_s
            send_at = max(now, self._tat_s - tolerance_s, self._paused_until_s)
            self._tat_s = max(self._tat_s, send_at) + self._interval_s
            return send_at - now

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        delay = self.reserve_delay_s()
        if delay > 0:
            await asyncio.sleep(delay)
        return delay

    def defer(self, seconds: float) -> None:
        """Send nothing for `seconds` (a server's Retry-After applies to every caller of the endpoint)."""
        with self._lock:
            self._paused_until_s = max(self._paused_until_s, self._clock() + seconds)
