"""Preferences (what the user values) and Limits (what the run may not exceed).

The preference vector P of the paper: one weight per tool (p_t), plus p_outcome, p_cost and p_latency, each in [0, 1],
with the natural-language instruction the orchestrator reads. Limits are hard: a dollar budget enforced by
reservation (`orchestra.rollout.budget`), a turn cap, and banned tools or providers (refused before execution).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestra.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Preferences:
    """The paper's P = [p_t1..p_tn, p_outcome, p_cost, p_latency] with its instruction.

    `tool_weights` maps tool names to p_t (absent tools weigh 0). `instruction` is appended to the task; when empty,
    `describe()` writes one from the weights.
    """

    tool_weights: Mapping[str, float] = field(default_factory=dict)
    outcome: float = 1.0
    cost: float = 0.0
    latency: float = 0.0
    instruction: str = ""

    def __post_init__(self) -> None:
        for name, value in [*self.tool_weights.items(), ("outcome", self.outcome), ("cost", self.cost),
                            ("latency", self.latency)]:
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"preferences.{name}: weight {value} must be in [0, 1]")

    def vector(self, tool_names: Sequence[str]) -> list[float]:
        """P in the order [tools..., outcome, cost, latency] for the given tool names."""
        return [float(self.tool_weights.get(t, 0.0)) for t in tool_names] + [self.outcome, self.cost, self.latency]

    def describe(self) -> str:
        """The instruction the orchestrator reads: the given one, or one written from the weights."""
        if self.instruction:
            return self.instruction
        parts = []
        if self.cost >= 0.5:
            parts.append("keep the cost low")
        if self.latency >= 0.5:
            parts.append("answer quickly")
        liked = sorted(t for t, w in self.tool_weights.items() if w >= 0.5)
        if liked:
            parts.append("prefer " + ", ".join(liked))
        return ("User preference: " + "; ".join(parts) + ".") if parts else ""


def avoiding(avoided: Iterable[str], names: Iterable[str], instruction: str, *, outcome: float = 1.0,
             cost: float = 0.0) -> Preferences:
    """"Avoid these": p = 0 for each avoided name and 1 for every other name, with the instruction.

    The paper's form: the reward cannot go below zero for a call (every p >= 0), so avoidance is taught by
    rewarding the alternatives. Every place that builds an avoid preference (evaluation's `--prefer-avoid`, the
    training samplers) goes through here."""
    banned = set(avoided)
    weights = {n: 0.0 if n in banned else 1.0 for n in names}
    weights.update({n: 0.0 for n in banned if n not in weights})
    return Preferences(weights, outcome=outcome, cost=cost, instruction=instruction)


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits of one episode."""

    max_turns: int = 10
    budget_usd: float | None = None
    banned_tools: frozenset[str] = frozenset()
    banned_providers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ConfigError("limits.max_turns: must be at least 1")
        if self.budget_usd is not None and self.budget_usd < 0:
            raise ConfigError("limits.budget_usd: must be >= 0")
