"""ReplayBackend: an orchestrator that answers from recorded trajectories, at their recorded cost.

Given trajectories (e.g. read with `orchestra.trajectory.read_trajectories`), it returns, for a conversation it has
seen, the completion the recorded orchestrator gave at that point, with its recorded usage, cost, latency and token
ids. Re-running an evaluation or re-grading with a changed grader then costs nothing and reproduces the original
episode exactly, as long as the tools return what they returned then (true for replay environments and
deterministic tools). A conversation that was never recorded is a `BackendError`, never an invented answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from orchestra.backends.base import Sampling
from orchestra.errors import BackendError
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message, Trajectory


class ReplayBackend:
    def __init__(self, trajectories: Iterable[Trajectory], *, model: str | None = None):
        self._recorded: dict[str, Completion] = {}
        names = set()
        for trajectory in trajectories:
            names.add(trajectory.orchestrator)
            messages = list(trajectory.messages)
            position = 0
            for turn in trajectory.turns:
                # the conversation the orchestrator saw before this turn: everything up to its reply
                reply_at = _index_of_reply(messages, position)
                self._recorded[_key(messages[:reply_at])] = turn.completion
                position = reply_at + 1
        self._model = model or (names.pop() if len(names) == 1 else "replay")

    @property
    def model(self) -> str:
        return self._model

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        recorded = self._recorded.get(_key(messages))
        return recorded.cost_usd if recorded is not None else 0.0

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling
                       ) -> Completion:
        recorded = self._recorded.get(_key(messages))
        if recorded is None:
            raise BackendError("replay: this conversation was not recorded", retryable=False)
        return recorded

    def __len__(self) -> int:
        return len(self._recorded)


def _index_of_reply(messages: Sequence[Message], start: int) -> int:
    for i in range(start, len(messages)):
        if messages[i].role == "assistant":
            return i
    raise ValueError("a trajectory has more turns than assistant messages")


def _key(messages: Sequence[Message]) -> str:
    payload = json.dumps([m.to_openai() for m in messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()
