"""The optional "too easy" filter: a task every strong model solves at pass@k teaches nothing, so it is dropped.

`judge_task(env, task_id, models, k)` runs each strong model on the task in the `tau` environment exactly as an
evaluation would (solo mode: the model reads the customer's instructions, gets the task's shown tools, and is graded
on the final database and what it said), up to `k` trials each, stopping at the first solve. It returns, per model,
the trials it took to solve (None: unsolved in k). A task is too easy when every model solved it; the first model
that fails ends the check early (the task is kept). Episodes are capped at `max_turns` turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from orchestra.envs.tau.env import TauEnvironment
from orchestra.preferences import Limits
from orchestra.rollout.episode import run_episode
from orchestra.synth.llm.items import Model
from orchestra.tools.toolbox import Toolbox

MAX_TURNS = 10


async def judge_task(env: TauEnvironment, task_id: str, models: Sequence[Model], k: int,
                     max_turns: int = MAX_TURNS) -> dict[str, int | None]:
    """Trials each model took to solve task `task_id` (None: not within k); stops at the first model that fails."""
    task = env.task(task_id)
    solved_at: dict[str, int | None] = {}
    for model in models:
        solved_at[model.identity] = None
        for trial in range(k):
            instance = env.start(task)
            sampling = replace(model.sampling, seed=trial)
            trajectory = await run_episode(instance.task, model.backend, Toolbox.of(instance.tools),
                                           limits=Limits(max_turns=max_turns), sampling=sampling)
            if (await instance.grade(trajectory)).solved:
                solved_at[model.identity] = trial + 1
                break
        if solved_at[model.identity] is None:
            break
    return solved_at


def is_too_easy(solved_at: dict[str, int | None], models: Sequence[Model]) -> bool:
    return len(solved_at) == len(models) and all(v is not None for v in solved_at.values())
