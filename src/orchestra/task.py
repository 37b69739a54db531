"""Task: one thing to solve, as frozen data. Behaviour (tools, grading) lives in the environment that made it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
