"""The records every part of orchestra passes around: messages, tool calls, observations, turns, trajectories.

Invariants
- Records are frozen. A trajectory is built once, at the end of an episode, from turns that were frozen as they
  happened; nothing mutates a message after it entered the conversation, so training can reuse its tokens unchanged.
- Money is US dollars (`cost_usd`), time is seconds (`latency_s`). Each turn and each observation carries its own
  cost and latency; totals are pure functions over them (`Trajectory.cost_usd`, ...), never counters kept on the side.
- A malformed tool call is data, not an exception: `ToolCall.error` says what was wrong with it, and the toolbox turns
  it into an error observation the orchestrator can read.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ObservationStatus = Literal["ok", "format_error", "tool_error", "denied"]
"""ok: the tool ran. format_error: the call was malformed (unparseable, unknown tool, arguments failing the schema)
and nothing ran. tool_error: the tool ran and failed. denied: the call was refused by the allow-list, a ban or the
budget, and nothing ran."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens billed for one model call."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the orchestrator asked for. `error` is set when the call could not be parsed or validated."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
        }


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message in OpenAI's shape; `tool_call_id` links a tool message to the call it answers."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls if c.error is None]
            if not out["tool_calls"]:
                del out["tool_calls"]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class Completion:
    """One orchestrator (or expert) model call as the backend saw it.

    `prompt_ids`/`completion_ids`/`logprobs` are filled by local backends only: the exact ids the model read and
    sampled, so that training never re-tokenizes text. `cost_usd` is computed by the backend from its price card (or
    taken from a recording, for replay).
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    cost_usd: float = 0.0
    latency_s: float = 0.0
    finish_reason: str = "stop"
    model: str = ""
    prompt_ids: tuple[int, ...] | None = None
    completion_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one tool call returned, as the orchestrator will read it, with what it cost."""

    call_id: str
    name: str
    content: str
    status: ObservationStatus = "ok"
    cost_usd: float = 0.0
    latency_s: float = 0.0
    usage: Usage | None = None
    terminal: bool = False
    """True when this call ends the episode (an `answer` tool); `content` is then the final answer."""
    target: str | None = None
    """The model or resource the call used when a tool takes it as an argument (e.g. `ask(model="gpt-4")`). The
    paper counts every model as a tool; `Trajectory.tool_counts` counts by target when there is one."""

    @property
    def is_error(self) -> bool:
        return self.status != "ok"


class Termination(StrEnum):
    """Why an episode stopped. Every trajectory has exactly one."""

    ANSWERED = "answered"  # a terminal tool (e.g. `answer`) gave the final answer
    FINAL_MESSAGE = "final_message"  # the orchestrator replied without tool calls
    MAX_TURNS = "max_turns"
    BUDGET = "budget"  # the next call could not be reserved within the budget
    CONTEXT = "context_length"  # the prompt no longer fits the orchestrator's context
    ERROR = "error"  # an infrastructure failure (BackendError) after retries


@dataclass(frozen=True, slots=True)
class Turn:
    """One orchestrator step: the completion, then the observations of the calls it made (run concurrently)."""

    index: int
    completion: Completion
    observations: tuple[Observation, ...] = ()
    latency_s: float = 0.0
    """Wall time of the whole turn: the completion plus the concurrent tool calls."""


@dataclass(frozen=True, slots=True)
class Trajectory:
    """Everything one episode did. Serialized as one JSONL line by `orchestra.trajectory`."""

    task_id: str
    messages: tuple[Message, ...]
    turns: tuple[Turn, ...]
    termination: Termination
    final_answer: str | None = None
    error: str | None = None
    orchestrator: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def calls(self) -> list[ToolCall]:
        return [c for t in self.turns for c in t.completion.tool_calls]

    @property
    def observations(self) -> list[Observation]:
        return [o for t in self.turns for o in t.observations]

    @property
    def orchestrator_cost_usd(self) -> float:
        return sum(t.completion.cost_usd for t in self.turns)

    @property
    def tool_cost_usd(self) -> float:
        return sum(o.cost_usd for o in self.observations)

    @property
    def cost_usd(self) -> float:
        """Everything the episode spent: the orchestrator's own tokens plus every tool and model call."""
        return self.orchestrator_cost_usd + self.tool_cost_usd

    @property
    def latency_s(self) -> float:
        """Wall time of the episode (sum of turn wall times)."""
        return sum(t.latency_s for t in self.turns)

    @property
    def tool_latency_s(self) -> float:
        """Wall time of tool calls: per turn, the slowest of its concurrent calls (the paper's latency)."""
        return sum(max((o.latency_s for o in t.observations), default=0.0) for t in self.turns)

    def tool_counts(self) -> Counter[str]:
        """Calls per tool (per target model for model-as-argument tools), counting only the calls that ran."""
        return Counter(o.target or o.name for o in self.observations if o.status in ("ok", "tool_error"))

    @property
    def format_errors(self) -> int:
        """Calls the orchestrator wrote that could not be parsed, named an unknown tool or had invalid arguments."""
        return sum(1 for o in self.observations if o.status == "format_error")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The grade of one trajectory. `solved` is the paper's r_outcome; `breakdown` says why."""

    solved: bool
    score: float = 0.0
    breakdown: Mapping[str, float] = field(default_factory=dict)
    details: str = ""
    grader_cost_usd: float = 0.0
    """What grading itself cost (e.g. an LLM judge), reported apart from the orchestrator's spend."""

