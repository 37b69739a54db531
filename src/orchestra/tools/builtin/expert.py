"""An expert model as a tool: the orchestrator sends it a question and reads its answer.

Cost is the expert's own (its backend prices usage from the price table); the worst case reserved before the call is
the backend's bound for the question and the expert's `max_tokens`. A failing expert endpoint becomes a
`tool_error` observation after the backend's retries, so the orchestrator can choose another tool; a failure the
provider still billed (a stream cut mid-generation, a body lost after its success status) carries that bill on the
observation, exactly as the orchestrator's own billed failures are charged (RELIABILITY F14).
"""

from __future__ import annotations

from typing import Any

from orchestra.backends.base import ChatBackend, Sampling, billed_cost_usd
from orchestra.errors import BackendError
from orchestra.toolcalls import strip_think
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
        try:
            completion = await backend.complete([Message("user", question)], [], sampling)
        except BackendError as exc:
            return ToolOutput(f"error: {type(exc).__name__}: {exc}", cost_usd=billed_cost_usd(backend, exc),
                              usage=exc.billed_usage, is_error=True, target=backend.model)
        return ToolOutput(strip_think(completion.text), cost_usd=completion.cost_usd, usage=completion.usage,
                          target=backend.model)

    def worst_case(arguments: dict[str, Any]) -> float:
        return backend.max_cost_usd([Message("user", str(arguments.get("question", "")))], [], sampling)

    return tool(ask, name=name, description=description, kind=kind, cost=card, provider=provider,
                timeout_s=timeout_s, max_cost=worst_case)
