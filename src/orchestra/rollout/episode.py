"""run_episode: the only multi-turn loop in orchestra.

Read top to bottom: build the first messages; then, until a stop: reserve the orchestrator call's worst-case cost,
get one completion, settle; if it made no tool calls, its text is the final answer; otherwise check each call,
reserve its worst-case cost, run the calls concurrently, settle, append the observations as tool messages; a terminal
tool (`answer`) ends the episode with its output. Each turn is frozen with its tokens, cost and latency.

Invariants
- The message list only grows; the trajectory's messages are exactly what the orchestrator was sent plus its replies.
- Spend never passes the budget: every paid call is reserved before it is sent (`Budget`).
- Nothing the model writes raises: malformed or refused calls become error observations and the loop goes on.
- Infrastructure failures (`BackendError` after the backend's retries) end the episode with `Termination.ERROR`.
- Every trajectory has one termination reason.
Variation comes from the objects passed in (backend, toolbox, prompt builder, observation renderer), not hooks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.errors import BackendError, BudgetExceeded, ContextLengthError
from orchestra.preferences import Limits, Preferences
from orchestra.rollout.budget import Budget
from orchestra.rollout.guard import wrap_untrusted
from orchestra.rollout.prompt import default_prompt
from orchestra.task import Task
from orchestra.toolcalls import final_text
from orchestra.tools.spec import ToolSpec
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message, Observation, Termination, ToolCall, Trajectory, Turn

PromptBuilder = Callable[[Task, Sequence[ToolSpec], Preferences | None], list[Message]]
ObservationRenderer = Callable[[Observation], str]


async def run_episode(
    task: Task,
    orchestrator: ChatBackend,
    toolbox: Toolbox,
    *,
    preferences: Preferences | None = None,
    limits: Limits = Limits(),
    budget: Budget | None = None,
    sampling: Sampling = Sampling(),
    build_prompt: PromptBuilder = default_prompt,
    render_observation: ObservationRenderer = wrap_untrusted,
) -> Trajectory:
    """Run `orchestrator` on `task` with `toolbox` until it answers or a limit stops it."""
    toolbox = toolbox.restricted(allow=task.allowed_tools, banned_tools=limits.banned_tools,
                                 banned_providers=limits.banned_providers)
    if limits.budget_usd is not None:
        budget = budget.child(limits.budget_usd) if budget is not None else Budget(limits.budget_usd)
    budget = budget or Budget(math.inf)
    specs = toolbox.specs()
    messages = build_prompt(task, specs, preferences)
    turns: list[Turn] = []
    final_answer: str | None = None
    error: str | None = None
    termination = Termination.MAX_TURNS

    for index in range(limits.max_turns):
        started = time.perf_counter()
        try:
            reservation = budget.reserve(orchestrator.max_cost_usd(messages, specs, sampling))
        except BudgetExceeded as exc:
            termination, error = Termination.BUDGET, str(exc)
            break
        try:
            completion = await orchestrator.complete(messages, specs, sampling)
        except BackendError as exc:
            billed = _billed_cost(orchestrator, exc)
            budget.settle(reservation, billed)
            termination = Termination.CONTEXT if isinstance(exc, ContextLengthError) else Termination.ERROR
            error = f"{type(exc).__name__}: {exc}"
            break
        budget.settle(reservation, completion.cost_usd)
        if not completion.latency_s:
            completion = replace(completion, latency_s=time.perf_counter() - started)
        messages.append(Message("assistant", completion.text, tool_calls=completion.tool_calls))

        if not completion.tool_calls:
            turns.append(Turn(index, completion, (), time.perf_counter() - started))
            termination, final_answer = Termination.FINAL_MESSAGE, final_text(completion.text)
            break

        observations, out_of_budget = await _run_calls(completion.tool_calls, toolbox, budget, task, messages)
        turns.append(Turn(index, completion, tuple(observations), time.perf_counter() - started))
        messages.extend(
            Message("tool", render_observation(o), tool_call_id=o.call_id, name=o.name or None) for o in observations
        )
        answer = next((o for o in observations if o.terminal and not o.is_error), None)
        if answer is not None:
            termination, final_answer = Termination.ANSWERED, answer.content
            break
        if out_of_budget:
            termination, error = Termination.BUDGET, "budget exhausted before a tool call"
            break

    return Trajectory(
        task_id=task.id,
        messages=tuple(messages),
        turns=tuple(turns),
        termination=termination,
        final_answer=final_answer,
        error=error,
        orchestrator=orchestrator.model,
    )


async def _run_calls(
    calls: Sequence[ToolCall], toolbox: Toolbox, budget: Budget, task: Task, messages: Sequence[Message]
) -> tuple[list[Observation], bool]:
    """Check, reserve and run one turn's calls concurrently; (observations in call order, budget ran out).
    Every call sees the task's prompt and the conversation up to this turn (a frozen copy)."""
    out_of_budget = False
    history = tuple(messages)

    async def one(call: ToolCall) -> Observation:
        nonlocal out_of_budget
        checked = toolbox.check(call)
        if isinstance(checked, Observation):
            return checked
        tool, arguments = checked
        try:
            reservation = budget.reserve(tool.max_cost_usd(arguments))
        except BudgetExceeded as exc:
            out_of_budget = True
            return Observation(call.id, call.name, f"refused: {exc}", status="denied")
        try:
            observation = await toolbox.run_checked(call, tool, arguments, task_id=task.id, prompt=task.prompt,
                                                    history=history)
        except asyncio.CancelledError:
            budget.settle(reservation, reservation.amount_usd)  # a cancelled paid call may still be billed
            raise
        budget.settle(reservation, observation.cost_usd)
        return observation

    observations = await asyncio.gather(*(one(c) for c in calls))
    return list(observations), out_of_budget


def _billed_cost(backend: ChatBackend, exc: BackendError) -> float:
    """What a failed call was still billed (e.g. the tokens of a truncated stream)."""
    usage = exc.billed_usage
    price = getattr(backend, "price", None)
    if usage is None or price is None:
        return 0.0
    return float(price.cost_usd(usage))
