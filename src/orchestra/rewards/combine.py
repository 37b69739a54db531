"""score_group: one group of rollouts in, one scored record per rollout out, with its breakdown.

This is what the trainer calls per task: the preference reward (`orchestra.rewards.preference`), the rollout filter
(`orchestra.rewards.outcome`) and the parts that explain the number (features, normalized features, weights), so a
reward can be read back from logs without recomputing it.

Invalid rollouts (format errors, no answer) keep their reward in the record but are flagged `valid=False`; the
trainer leaves them out of the loss and of the group's advantage statistics (`orchestra.train.grpo`). They still take
part in the min/max normalization: the formula's group T is every rollout of the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.preferences import Preferences
from orchestra.rewards.outcome import is_valid_rollout
from orchestra.rewards.preference import Features, features, group_rewards, normalize_group
from orchestra.types import Outcome, Trajectory


@dataclass(frozen=True, slots=True)
class ScoredRollout:
    """The reward of one rollout with everything that produced it."""

    reward: float
    valid: bool
    features: Features
    normalized: tuple[float, ...]
    """M^(tau): the min-max normalized feature vector, in the order [tools..., outcome, cost, latency]."""
    weights: tuple[float, ...]
    """P laid out over the same order."""


def score_group(
    trajectories: Sequence[Trajectory],
    outcomes: Sequence[Outcome],
    preferences: Preferences,
    tool_names: Sequence[str],
) -> list[ScoredRollout]:
    """Score the rollouts of one task (same order as given)."""
    if len(trajectories) != len(outcomes):
        raise ValueError(f"{len(trajectories)} trajectories but {len(outcomes)} outcomes")
    group = [features(t, o, tool_names) for t, o in zip(trajectories, outcomes, strict=True)]
    rewards = group_rewards(group, preferences)
    normalized = normalize_group([f.vector() for f in group])
    weights = tuple(preferences.vector(tool_names))
    return [
        ScoredRollout(reward=r, valid=is_valid_rollout(t), features=f, normalized=tuple(n), weights=weights)
        for r, t, f, n in zip(rewards, trajectories, group, normalized, strict=True)
    ]
