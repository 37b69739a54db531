"""Environment: where tasks come from, which tools they bring, and how a trajectory is graded.

`Environment.tasks(split)` gives frozen `Task` records. `Environment.start(task)` gives an `Instance`: the task's own
tools bound to fresh state (e.g. a copy of a domain database) and `grade(trajectory) -> Outcome` bound to that same
state. Each episode gets its own instance, so the rollouts of one GRPO group never see each other's writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestra.task import Task
from orchestra.tools.spec import Tool
from orchestra.types import Trajectory


@dataclass(frozen=True, slots=True)
class Outcome:
    """The grade of one trajectory. `solved` is the paper's r_outcome; `breakdown` says why."""

    solved: bool
    score: float = 0.0
    breakdown: Mapping[str, float] = field(default_factory=dict)
    details: str = ""
    grader_cost_usd: float = 0.0
    """What grading itself cost (e.g. an LLM judge), reported apart from the orchestrator's spend."""


@dataclass(frozen=True)
class Instance:
    """One task's tools bound to fresh state, and the grader bound to the same state."""

    task: Task
    tools: Sequence[Tool]
    grade: Callable[[Trajectory], Awaitable[Outcome]]


class Environment(Protocol):
    name: str

    def tasks(self, split: str | None = None) -> Sequence[Task]:
        ...

    def start(self, task: Task) -> Instance:
        ...
