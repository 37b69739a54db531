"""Outcome reward and the rollout filter: did a trajectory solve its task, and is it fit to train on.

`outcome_reward` is the paper's r_outcome in {0, 1}: the environment's grader decides (`Outcome.solved`); a partial
`Outcome.score` is reported, never rewarded, because the paper's reward is binary.

`is_valid_rollout` is the paper's rollout filter ("drop rollouts with format errors or no valid answer"). A dropped
rollout is left out of the loss and of its group's statistics (`orchestra.train.grpo`); it is not given a negative
reward, since a format error says nothing about the quality of the tools it chose.
"""

from __future__ import annotations

from orchestra.types import Outcome, Termination, Trajectory

ANSWER_TERMINATIONS = frozenset({Termination.ANSWERED, Termination.FINAL_MESSAGE})
"""Ways an episode can end with an answer of its own; every other termination (turn cap, budget, context, error)
ends without one."""


def outcome_reward(outcome: Outcome) -> float:
    """r_outcome: 1.0 when the grader says the task was solved, else 0.0."""
    return 1.0 if outcome.solved else 0.0


def has_valid_answer(trajectory: Trajectory) -> bool:
    """True when the episode ended by answering (an `answer` call or a plain final message) with non-blank text."""
    return (
        trajectory.termination in ANSWER_TERMINATIONS
        and trajectory.final_answer is not None
        and trajectory.final_answer.strip() != ""
    )


def is_valid_rollout(trajectory: Trajectory) -> bool:
    """The rollout filter: no malformed tool call anywhere in the episode, and a valid final answer."""
    return trajectory.format_errors == 0 and has_valid_answer(trajectory)
