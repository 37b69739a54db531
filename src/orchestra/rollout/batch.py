"""Run many episodes at once: each on a fresh environment instance, graded, with bounded concurrency.

`run_task` is one task end to end (start an instance, run the episode with the pool's tools plus the task's, grade).
`run_many` runs tasks concurrently under a semaphore and reports each result as it lands (for progress bars and
append-only result stores), returning results in task order. With a local orchestrator the concurrent episodes'
completions are batched by the backend, so concurrency here is what turns into batched generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.preferences import Limits, Preferences
from orchestra.rollout.budget import Budget
from orchestra.rollout.episode import ObservationRenderer, PromptBuilder, run_episode
from orchestra.rollout.guard import wrap_untrusted
from orchestra.rollout.prompt import default_prompt
from orchestra.task import Environment, InstancePolicy, Task
from orchestra.tools.spec import Tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Outcome, Trajectory


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    task: Task
    trajectory: Trajectory
    outcome: Outcome
    preferences: Preferences | None = None


@dataclass(frozen=True)
class EpisodeSettings:
    """Everything about how episodes run that is not the task or the orchestrator."""

    pool_tools: Sequence[Tool] = ()
    preferences: Preferences | None = None
    limits: Limits = Limits()
    sampling: Sampling = Sampling()
    build_prompt: PromptBuilder = default_prompt
    render_observation: ObservationRenderer = wrap_untrusted
    budget: Budget | None = None
    """One run-wide cap shared by every episode run with these settings (orchestrator and tool calls alike);
    `limits.budget_usd` still caps each episode inside it. None: no run-wide cap."""
    extra: dict[str, Any] = field(default_factory=dict)


async def run_task(
    env: Environment,
    task: Task,
    orchestrator: ChatBackend | InstancePolicy,
    settings: EpisodeSettings = EpisodeSettings(),
    *,
    budget: Budget | None = None,
    preferences: Preferences | None = None,
) -> EpisodeResult:
    """One task: a fresh instance, the episode, the grade. `preferences` overrides the settings' for this task;
    `budget` (default: the settings') is the run-wide budget this episode draws on.
    An `InstancePolicy` orchestrator is bound to the instance first (rule baselines read its state)."""
    instance = env.start(task)
    backend = orchestrator.for_instance(instance) if isinstance(orchestrator, InstancePolicy) else orchestrator
    prefs = preferences if preferences is not None else settings.preferences
    toolbox = Toolbox.of([*settings.pool_tools, *task_tools(instance.tools, settings.pool_tools)])
    trajectory = await run_episode(
        task,
        backend,
        toolbox,
        preferences=prefs,
        limits=settings.limits,
        budget=budget if budget is not None else settings.budget,
        sampling=settings.sampling,
        build_prompt=settings.build_prompt,
        render_observation=settings.render_observation,
    )
    outcome = await instance.grade(trajectory)
    return EpisodeResult(task, trajectory, outcome, prefs)


def task_tools(tools: Sequence[Tool], pool_tools: Sequence[Tool]) -> list[Tool]:
    """The instance's tools, less those a pool tool marked `metadata["final_answer"]` replaces by name (the paper's
    `answer`, whose expert writes the final answer, stands in for a QA task's own `answer(text)`)."""
    replacing = {t.name for t in pool_tools if t.metadata.get("final_answer")}
    return [t for t in tools if t.name not in replacing]


async def run_many(
    env: Environment,
    tasks: Sequence[Task],
    orchestrator: ChatBackend | InstancePolicy,
    settings: EpisodeSettings = EpisodeSettings(),
    *,
    concurrency: int = 16,
    budget: Budget | None = None,
    preferences: Sequence[Preferences | None] | None = None,
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Run `tasks` (optionally each with its own preferences) with at most `concurrency` in flight."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, task: Task) -> EpisodeResult:
        async with gate:
            prefs = preferences[i] if preferences is not None else None
            result = await run_task(env, task, orchestrator, settings, budget=budget, preferences=prefs)
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks))))
