"""An expert model as a tool: the orchestrator sends it a question and reads its answer.

Cost is the expert's own (its backend prices usage from the price table); the worst case reserved before the call is
the backend's estimate for the question and the expert's `max_tokens`. A failing expert endpoint becomes a
`tool_error` observation after the backend's retries, so the orchestrator can choose another tool.
"""

from __future__ import annotations

from typing import Any

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.rollout.parse import strip_think
from orchestra.tools.spec import CostCard, Tool, ToolKind, ToolOutput, tool
from orchestra.types import Message


def expert_tool(
    name: str,
    backend: ChatBackend,
    *,
    description: str,
    card: CostCard,
    kind: ToolKind = "generalist",
    provider: str | None = None,
    max_tokens: int = 512,
    timeout_s: float = 120.0,
) -> Tool:
    sampling = Sampling(max_tokens=max_tokens)

    async def ask(question: str) -> ToolOutput:
        """Ask this model a question and read its answer.

        Args:
            question: the complete, self-contained question (the expert sees nothing else)
        """
        completion = await backend.complete([Message("user", question)], [], sampling)
        return ToolOutput(strip_think(completion.text), cost_usd=completion.cost_usd, usage=completion.usage,
                          target=backend.model)

    def worst_case(arguments: dict[str, Any]) -> float:
        return backend.max_cost_usd([Message("user", str(arguments.get("question", "")))], [], sampling)

    return tool(ask, name=name, description=description, kind=kind, cost=card, provider=provider,
                timeout_s=timeout_s, max_cost=worst_case)
