"""The paper's preference reward (section 3.2) and its preference-following metric (appendix).

Reward. For a trajectory tau with tools t1..tn, the feature vector is

    M(tau) = [m_t1, ..., m_tn, r_outcome, -cost_usd, -latency_s]

(m_t = calls to tool t; r_outcome in {0, 1}). Within the group T of rollouts of one task, each component k is
min-max normalized,

    M^(tau)[k] = (M(tau)[k] - min_T M[k]) / (max_T M[k] - min_T M[k]),   0 when max_T M[k] == min_T M[k],

and with the user's P = [p_t1..p_tn, p_outcome, p_cost, p_latency] (each in [0, 1])

    R(tau) = M^(tau) . P   if tau solved the task,   R(tau) = 0 otherwise.

So R is in [0, sum(P)]; a component that is constant over the group contributes 0; R does not change when every cost
(or latency) in the group is multiplied by the same positive constant or shifted by the same amount (prices are the
price table's business, not the reward's).

What goes into M (`features`):
- m_t: `Trajectory.tool_counts()`, the calls that ran, counted per target model for model-as-argument tools
  (malformed or refused calls are not tool use). `tool_names` may so name models as well as tools.
- cost_usd: `Trajectory.cost_usd`: the orchestrator's own tokens plus every tool and model call, the final `answer`
  call included.
- latency_s: `Trajectory.tool_latency_s`: per turn, the slowest of its concurrent tool calls (the answer call
  included), summed over turns; this is the paper's "wall time of the tool calls". The orchestrator's own generation
  time is left out: during training it measures the batched rollout server's load, not the policy's choices.

Edge cases: min/max are taken over the whole group, unsolved rollouts included (the formula's T); a group of one
rollout has every component constant, so its reward is 0. Two values count as equal when they differ by less than
1e-9 of their magnitude: costs summed in a different order differ in the last bits, and a plain `max == min` would
turn that rounding into a full unit of reward.

Defects of the released implementation that this does not repeat:
- zero tool counts were left out of the min/max (a rollout that never called tool t counts m_t = 0 here);
- the final `answer` call was never charged for cost or latency (it is an observation of the trajectory here, so
  both totals include it);
- a constant offset was added to every correct rollout (none here: R is exactly M^ . P);
- two input prices were divided by 1e7 instead of 1e6 (prices live in the price table, which is per million tokens).

Preference-following metric (appendix), per example, run s against the base run 0:
    M^_s[k] = M_s[k] / max(1, M_0[k])   for tool counts and outcome,
    M^_s[k] = M_0[k] / max(1, M_s[k])   for cost and latency (positive amounts here),
    score = M^_s . P if run s solved the example else 0;  the benchmark score is the sum over examples.
Departure: the max(1, .) guard makes this score depend on units. Measured in dollars, every run under $1 gets its
base run's cost as its cost term whatever it spent, so cost is measured in cents and latency in seconds by default;
the units are arguments so reported numbers can say which were used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.preferences import Preferences
from orchestra.types import Outcome, Trajectory

TIE_RELATIVE_TOLERANCE = 1e-9
"""Two group values whose difference is at most this fraction of their magnitude count as equal."""


@dataclass(frozen=True, slots=True)
class Features:
    """M(tau) of one trajectory, with cost and latency kept positive and in named units; `vector()` gives M."""

    tool_names: tuple[str, ...]
    tool_counts: tuple[int, ...]
    solved: bool
    cost_usd: float
    latency_s: float

    def __post_init__(self) -> None:
        if len(self.tool_names) != len(self.tool_counts):
            raise ValueError(f"{len(self.tool_names)} tool names but {len(self.tool_counts)} counts")
        if any(c < 0 for c in self.tool_counts) or self.cost_usd < 0 or self.latency_s < 0:
            raise ValueError(f"features must be non-negative: {self}")

    def vector(self) -> tuple[float, ...]:
        """M(tau) = [m_t1..m_tn, r_outcome, -cost_usd, -latency_s]."""
        return (*(float(c) for c in self.tool_counts), 1.0 if self.solved else 0.0, -self.cost_usd, -self.latency_s)


def features(trajectory: Trajectory, outcome: Outcome, tool_names: Sequence[str]) -> Features:
    """The features of `trajectory` over `tool_names` (tools it never called count 0; others are ignored)."""
    counts = trajectory.tool_counts()
    return Features(
        tool_names=tuple(tool_names),
        tool_counts=tuple(counts.get(name, 0) for name in tool_names),
        solved=outcome.solved,
        cost_usd=trajectory.cost_usd,
        latency_s=trajectory.tool_latency_s,
    )


def normalize_group(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """Min-max normalize each column over the group: (x - min) / (max - min), 0 for a constant column.

    `vectors` is one row per rollout, all of the same length; every value returned is in [0, 1].
    """
    if not vectors:
        return []
    width = len(vectors[0])
    if any(len(v) != width for v in vectors):
        raise ValueError("every feature vector of a group must have the same length")
    columns = list(zip(*vectors, strict=True)) if width else []
    normalized_columns = [_normalize_column(col) for col in columns]
    return [[col[i] for col in normalized_columns] for i in range(len(vectors))]


def group_rewards(group: Sequence[Features], preferences: Preferences) -> list[float]:
    """R(tau) for each rollout of one group: M^(tau) . P when solved, else 0 (see the module docstring).

    All rollouts must share the same tool names (P is laid out over them). The outcome is read from
    `Features.solved`, so it cannot disagree with the r_outcome component.
    """
    if not group:
        return []
    tool_names = group[0].tool_names
    if any(f.tool_names != tool_names for f in group):
        raise ValueError("every rollout of a group must be featurized over the same tool names")
    weights = preferences.vector(tool_names)
    normalized = normalize_group([f.vector() for f in group])
    return [
        sum(w * x for w, x in zip(weights, row, strict=True)) if f.solved else 0.0
        for f, row in zip(group, normalized, strict=True)
    ]


def preference_rewards(
    trajectories: Sequence[Trajectory],
    outcomes: Sequence[Outcome],
    preferences: Preferences,
    tool_names: Sequence[str],
) -> list[float]:
    """`group_rewards` of one group given as trajectories and their grades."""
    if len(trajectories) != len(outcomes):
        raise ValueError(f"{len(trajectories)} trajectories but {len(outcomes)} outcomes")
    group = [features(t, o, tool_names) for t, o in zip(trajectories, outcomes, strict=True)]
    return group_rewards(group, preferences)


def preference_following_score(
    run: Features,
    base_run: Features,
    preferences: Preferences,
    *,
    cost_unit_usd: float = 0.01,
    latency_unit_s: float = 1.0,
) -> float:
    """The appendix's score of `run` against `base_run` on one example (see the module docstring).

    Cost and latency are expressed in `cost_unit_usd` and `latency_unit_s` before the max(1, .) guard.
    """
    if run.tool_names != base_run.tool_names:
        raise ValueError("run and base run must be featurized over the same tool names")
    if cost_unit_usd <= 0 or latency_unit_s <= 0:
        raise ValueError("cost_unit_usd and latency_unit_s must be positive")
    if not run.solved:
        return 0.0
    counts = [m_s / max(1, m_0) for m_s, m_0 in zip(run.tool_counts, base_run.tool_counts, strict=True)]
    outcome = (1.0 if run.solved else 0.0) / max(1.0, 1.0 if base_run.solved else 0.0)
    cost = (base_run.cost_usd / cost_unit_usd) / max(1.0, run.cost_usd / cost_unit_usd)
    latency = (base_run.latency_s / latency_unit_s) / max(1.0, run.latency_s / latency_unit_s)
    normalized = [*counts, outcome, cost, latency]
    return sum(w * x for w, x in zip(preferences.vector(run.tool_names), normalized, strict=True))


def preference_following_benchmark(
    runs: Sequence[Features],
    base_runs: Sequence[Features],
    preferences: Sequence[Preferences],
    *,
    cost_unit_usd: float = 0.01,
    latency_unit_s: float = 1.0,
) -> float:
    """The benchmark score: the sum over examples of `preference_following_score` (one P per example)."""
    if not len(runs) == len(base_runs) == len(preferences):
        raise ValueError("runs, base_runs and preferences must have one entry per example")
    return sum(
        preference_following_score(r, b, p, cost_unit_usd=cost_unit_usd, latency_unit_s=latency_unit_s)
        for r, b, p in zip(runs, base_runs, preferences, strict=True)
    )


def _normalize_column(values: Sequence[float]) -> list[float]:
    low, high = min(values), max(values)
    span = high - low
    if span <= TIE_RELATIVE_TOLERANCE * max(abs(low), abs(high)):
        return [0.0] * len(values)
    # Clamp: (x - low) / span can land a rounding error outside [0, 1].
    return [min(1.0, max(0.0, (x - low) / span)) for x in values]
