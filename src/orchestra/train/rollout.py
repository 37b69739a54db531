"""Multi-turn rollouts for training: groups of episodes -> token-exact sequences, env masks and rewards.

`collect_groups` runs `group_size` episodes per task concurrently through the one episode loop (so a local policy's
completions are batched across episodes by `LocalBackend`), grades them, and scores each group with the paper's
reward (`orchestra.rewards.combine.score_group`). `to_sequence` turns a trajectory into what an optimizer trains on:
the first prompt's ids, then every later token in order: the tokens the policy sampled (mask 1, with their
logprobs) and the tool results and template text between turns (mask 0). It never re-tokenizes text the model
wrote: the ids come from `Completion.prompt_ids`/`completion_ids`, and the invariant that each turn's prompt extends
the previous prompt plus its completion is checked, not assumed.

Filters (REFERENCE.md section 3): a rollout with format errors or no valid answer gets no reward (`None`: excluded
from its group's statistics and given zero advantage); a group whose reward std is below `min_group_std` is dropped
the same way, since it carries no preference between its rollouts.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.backends.base import ChatBackend
from orchestra.envs.base import Environment
from orchestra.preferences import Preferences
from orchestra.rewards.combine import score_group
from orchestra.rollout.batch import EpisodeResult, EpisodeSettings, run_many
from orchestra.task import Task


@dataclass(frozen=True, slots=True)
class TokenSequence:
    """One rollout as token ids: `completion_ids` holds every token after the first prompt."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    env_mask: tuple[int, ...]
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class ScoredGroup:
    task: Task
    preferences: Preferences
    results: list[EpisodeResult]
    rewards: list[float | None]
    """Per rollout; None for a rollout (or a whole group) the filters dropped."""
    raw_rewards: list[float]
    """The paper's reward before filtering, for logging."""


async def collect_groups(
    env: Environment, tasks: Sequence[Task], preferences: Sequence[Preferences], orchestrator: ChatBackend,
    settings: EpisodeSettings, *, group_size: int, tool_names: Sequence[str], min_group_std: float = 0.1,
    concurrency: int = 64,
) -> list[ScoredGroup]:
    """`group_size` graded rollouts of each task under its preference, scored per group."""
    flat_tasks = [t for t in tasks for _ in range(group_size)]
    flat_prefs = [p for p in preferences for _ in range(group_size)]
    results = await run_many(env, flat_tasks, orchestrator, settings, concurrency=concurrency,
                             preferences=flat_prefs)
    groups = []
    for g, (task, prefs) in enumerate(zip(tasks, preferences, strict=True)):
        members = results[g * group_size : (g + 1) * group_size]
        scored = score_group([r.trajectory for r in members], [r.outcome for r in members], prefs, tool_names)
        raw = [s.reward for s in scored]
        valid_rewards = [s.reward for s in scored if s.valid]
        keep_group = len(valid_rewards) >= 2 and statistics.pstdev(valid_rewards) >= min_group_std
        rewards = [s.reward if (s.valid and keep_group) else None for s in scored]
        groups.append(ScoredGroup(task, prefs, members, rewards, raw))
    return groups


def to_sequence(result: EpisodeResult) -> TokenSequence:
    """The token-exact training sequence of one rollout (see the module docstring)."""
    turns = result.trajectory.turns
    if not turns or turns[0].completion.prompt_ids is None:
        raise ValueError(f"rollout {result.task.id} has no token ids: train with a local orchestrator")
    prompt = tuple(turns[0].completion.prompt_ids)
    ids: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    seen = list(prompt)
    for i, turn in enumerate(turns):
        c = turn.completion
        if c.completion_ids is None or c.prompt_ids is None:
            raise ValueError(f"rollout {result.task.id} turn {i} has no token ids")
        if tuple(c.prompt_ids[: len(seen)]) != tuple(seen) or len(c.prompt_ids) < len(seen):
            raise ValueError(f"rollout {result.task.id} turn {i}: the prompt does not extend the previous turn's "
                             "tokens; the backend re-tokenized sampled text")
        between = c.prompt_ids[len(seen):]
        ids += between
        mask += [0] * len(between)
        logprobs += [0.0] * len(between)
        ids += c.completion_ids
        mask += [1] * len(c.completion_ids)
        logprobs += list(c.logprobs) if c.logprobs is not None else [0.0] * len(c.completion_ids)
        seen = list(c.prompt_ids) + list(c.completion_ids)
    return TokenSequence(prompt, tuple(ids), tuple(mask), tuple(logprobs))
