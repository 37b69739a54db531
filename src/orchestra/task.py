"""Task: one thing to solve, as frozen data; and the `Environment` protocol that makes tasks and grades them.

`Environment.tasks(split)` gives frozen `Task` records. `Environment.start(task)` gives an `Instance`: the task's own
tools bound to fresh state (e.g. a copy of a domain database) and `grade(trajectory) -> Outcome` bound to that same
state. Each episode gets its own instance, so the rollouts of one GRPO group never see each other's writes.

These records sit at the bottom of the package (they import only `types` and `tools.spec`) so that the episode
loop, the batch runner and the rewards use them without importing any environment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestra.backends.base import ChatBackend
from orchestra.tools.spec import Tool
from orchestra.types import Outcome, Trajectory


@dataclass(frozen=True, slots=True)
class Task:
    """A task record: the prompt the orchestrator reads and what its environment needs to grade it.

    `allowed_tools`, when set, is the task's allow-list: calls to any other tool are refused before execution.
    `system` is extra system text for this task (e.g. a domain policy).
    """

    id: str
    prompt: str
    system: str = ""
    allowed_tools: frozenset[str] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


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


@runtime_checkable
class InstancePolicy(Protocol):
    """An orchestrator that needs the episode's instance (its task, its state) to act: rule baselines.

    The batch runner calls `for_instance` once per episode and runs the backend it returns, so a baseline reads the
    task and what its tools returned from the instance's own records, never from rendered prompt text."""

    @property
    def model(self) -> str:
        ...

    def for_instance(self, instance: Instance) -> ChatBackend:
        ...


__all__ = ["Environment", "Instance", "InstancePolicy", "Outcome", "Task"]
