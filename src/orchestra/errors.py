"""The three kinds of error in orchestra.

- `ConfigError`: the caller's mistake (a bad config field, an unknown model, a missing price). Raised early, at load,
  with the field named and how to fix it.
- Model and tool misbehaviour (a malformed tool call, a tool that fails) is never raised: it is recorded on the
  trajectory as an error observation (`orchestra.types.Observation.status`).
- `BackendError`: infrastructure (an endpoint down, timeouts, a truncated stream). Retried at one boundary (the HTTP
  backend); when retries are exhausted the episode ends with `Termination.ERROR`.
"""

from __future__ import annotations


class OrchestraError(Exception):
    """Base class of the errors orchestra raises."""


class ConfigError(OrchestraError, ValueError):
    """A caller mistake: bad configuration, unknown name, missing price. The message names the field."""


class BackendError(OrchestraError):
    """A model endpoint failed after retries (or failed in a way retries cannot fix).

    `retryable` tells the circuit breaker and callers whether the failure was transient. `billed_usage` carries the
    tokens the provider already charged for (a truncated stream is still paid for).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False, billed_usage=None):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.billed_usage = billed_usage


class CircuitOpenError(BackendError):
    """The endpoint failed repeatedly; calls fail fast until the half-open probe succeeds."""


class BudgetExceeded(OrchestraError):
    """A reservation would take spend past the budget's cap. Nothing was sent."""


class ContextLengthError(BackendError):
    """The prompt no longer fits the model's context window; the episode ends with `Termination.CONTEXT`."""
