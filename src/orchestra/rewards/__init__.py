"""orchestra.rewards: the outcome reward, the rollout filter and the paper's group-normalized preference reward.

Pure functions over `Trajectory` and `Outcome`; no torch.
"""

from orchestra.rewards.combine import ScoredRollout, score_group
from orchestra.rewards.outcome import has_valid_answer, is_valid_rollout, outcome_reward
from orchestra.rewards.preference import (
    Features,
    features,
    group_rewards,
    normalize_group,
    preference_following_benchmark,
    preference_following_score,
    preference_rewards,
)

__all__ = [
    "Features", "ScoredRollout", "features", "group_rewards", "has_valid_answer", "is_valid_rollout",
    "normalize_group", "outcome_reward", "preference_following_benchmark", "preference_following_score",
    "preference_rewards", "score_group",
]
