"""The hard budget over the real HTTP backend (RELIABILITY F10, F13, F14, F15) against the scripted server on 127.0.0.1.

Every test runs many episodes at once on one shared `Budget`, asserts that the server really saw them overlap, and
checks the cap exactly (no tolerance): spend is kept in integer units, and each settlement is at most its reservation.
Prompts tokenize densely (CJK, emoji; the server counts one token per UTF-8 byte) and tool results are long.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestra.backends.base import Sampling, prompt_token_bound
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice
from orchestra.errors import BudgetExceeded
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings, run_many
from orchestra.rollout.budget import Budget
from orchestra.rollout.episode import run_episode
from orchestra.task import Instance, Task
from orchestra.tools.builtin.expert import expert_tool
from orchestra.tools.spec import tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message, Outcome, Termination, Usage
from tests.servers.scripted_openai import (
    Fault,
    Reply,
    ScriptedOpenAIServer,
    SeenRequest,
    byte_tokens,
    overshooting,
    sequence,
)

PRICE = ModelPrice(2.0, 8.0)
FAST = dict(timeout_s=5.0, max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.02)
QUESTION = "请计算：一列火车在1.5小时内行驶120公里，平均速度是多少？🚄🚀👩‍👩‍👧‍👦 " * 8
SAMPLING = Sampling(max_tokens=64)
EPISODES = 32


def lookup(query: str) -> str:
    """Look a subject up in the archive.

    Args:
        query: what to look up
    """
    return ("数据🙂記録👩‍💻" * 600)[:4000]


LOOKUP = tool(lookup)


def _script(request: SeenRequest) -> Reply:
    """First turn: call `lookup`; after a tool result: answer (in CJK)."""
    if any(m.get("role") == "tool" for m in request.messages):
        return Reply(content="答案：80公里/小时", usage=(byte_tokens(request), 12))
    call = {"id": f"c{len(request.messages)}", "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"query": "火车 🚄"}, ensure_ascii=False)}}
    return Reply(content=None, tool_calls=(call,), usage=(byte_tokens(request), 20))


async def _run_32(server: ScriptedOpenAIServer, budget: Budget) -> list:
    plain = OpenAICompatBackend("m", server.base_url, price=PRICE, **FAST)
    stream = OpenAICompatBackend("m", server.base_url, price=PRICE, stream=True, **FAST)
    try:
        return list(await asyncio.gather(*(
            run_episode(Task(f"t{i}", QUESTION), (stream if i % 2 else plain), Toolbox.of([LOOKUP]),
                        budget=budget, sampling=SAMPLING, limits=Limits(max_turns=3))
            for i in range(EPISODES)
        )))
    finally:
        await plain.aclose()
        await stream.aclose()


def _spent_on_trajectories(trajectories) -> float:
    return sum(t.cost_usd for t in trajectories)


async def test_f13_prompt_bound_holds_for_byte_dense_prompts_over_http():
    """An honest server counting one token per byte never reports more than the reservation: nothing is disputed."""
    cap = 0.5
    with ScriptedOpenAIServer(_script, latency_s=0.05) as server:
        budget = Budget(cap)
        trajectories = await _run_32(server, budget)
        assert server.max_in_flight >= 8  # the episodes really overlapped
    assert budget.spent_usd <= cap and budget.reserved_usd == 0
    assert budget.disputed_usd == 0  # every reported prompt fit its bound; every output fit max_tokens
    terminations = {t.termination for t in trajectories}
    assert Termination.BUDGET in terminations and Termination.FINAL_MESSAGE in terminations  # the cap bound
    assert _spent_on_trajectories(trajectories) == pytest.approx(budget.spent_usd, abs=1e-9)


async def test_f13_a_server_that_ignores_max_tokens_cannot_push_spend_past_the_cap():
    cap = 0.5
    with ScriptedOpenAIServer(overshooting(_script, factor=40), latency_s=0.05) as server:
        budget = Budget(cap)
        trajectories = await _run_32(server, budget)
        assert server.max_in_flight >= 8
    assert budget.spent_usd <= cap and budget.reserved_usd == 0  # exactly: no tolerance
    # Plain bodies arrive whole and report 40 x max_tokens: billed as reported on the trajectory, the excess disputed.
    assert budget.disputed_usd > 0
    assert _spent_on_trajectories(trajectories) == pytest.approx(budget.spent_usd + budget.disputed_usd, abs=1e-9)
    assert any(t.termination is Termination.BUDGET for t in trajectories)
    # Streams are cut at max_tokens: they end as an honest server would (length, max_tokens billed, nothing disputed).
    streamed = [t.turns[0].completion for t in trajectories[1::2] if t.turns]
    assert streamed and all(c.finish_reason == "length" and c.usage.output_tokens == SAMPLING.max_tokens
                            and len(c.text) <= SAMPLING.max_tokens for c in streamed)


async def test_f13_the_reservation_bounds_the_old_character_estimate_failure_case():
    """The dense-prompt case that a characters / 3 estimate under-reserved: the bound is above the byte count."""
    messages = [Message("user", QUESTION), Message("tool", lookup("x"), tool_call_id="c1", name="lookup")]
    request = SeenRequest(0.0, "POST", "/v1/chat/completions", {}, {
        "messages": [m.to_openai() for m in messages], "tools": [LOOKUP.spec.to_openai()]})
    assert prompt_token_bound(messages, [LOOKUP.spec]) >= byte_tokens(request)
    assert byte_tokens(request) > sum(len(m.content) for m in messages) // 3 * 2  # the old estimate was far below


async def test_f14_a_stream_cut_inside_an_expert_tool_is_charged_not_recorded_as_zero():
    with ScriptedOpenAIServer(sequence(Fault("truncate", keep_chunks=4))) as server:
        expert = OpenAICompatBackend("expert", server.base_url, price=PRICE, stream=True, **FAST)
        ask = expert_tool("ask_expert", expert, description="an expert", card=PRICE.card(), max_tokens=128)
        budget = Budget(1.0)
        reservation = budget.reserve(ask.max_cost_usd({"question": QUESTION}))
        observation = await Toolbox.of([ask]).call(_call("ask_expert", question=QUESTION))
        budget.settle(reservation, observation.cost_usd)
        await expert.aclose()
        assert len(server.requests) == 1  # a paid generation is not sent again
    assert observation.status == "tool_error" and "truncated stream" in observation.content
    assert observation.usage is not None and observation.usage.output_tokens > 0
    assert observation.cost_usd == pytest.approx(PRICE.cost_usd(observation.usage)) and observation.cost_usd > 0
    assert 0 < budget.spent_usd <= reservation.amount_usd and budget.disputed_usd == 0


async def test_f14_a_plain_body_cut_inside_an_expert_tool_is_charged_its_worst_case():
    with ScriptedOpenAIServer(sequence(Fault("truncate"), then=Reply(content="second"))) as server:
        expert = OpenAICompatBackend("expert", server.base_url, price=PRICE, **FAST)
        ask = expert_tool("ask_expert", expert, description="an expert", card=PRICE.card(), max_tokens=128)
        observation = await Toolbox.of([ask]).call(_call("ask_expert", question=QUESTION))
        await expert.aclose()
        assert len(server.requests) == 1
    assert observation.status == "tool_error"
    assert observation.usage == Usage(prompt_token_bound([Message("user", QUESTION)], []), 128)
    assert observation.cost_usd == pytest.approx(ask.max_cost_usd({"question": QUESTION}))


class _Archive:
    """A minimal environment: every task gets the `lookup` tool and an expert; grading is a no-op."""

    name = "archive"

    def __init__(self, expert):
        self.expert = expert

    def tasks(self, split=None):
        return [Task(f"a{i}", QUESTION) for i in range(EPISODES)]

    def start(self, task):
        async def grade(trajectory):
            return Outcome(solved=trajectory.final_answer is not None)

        return Instance(task, [LOOKUP, self.expert], grade)


async def test_f15_one_run_wide_budget_across_every_episode_of_run_many():
    """Orchestrator and expert calls of 32 concurrent episodes all draw on one budget given in the settings."""
    def script(request: SeenRequest) -> Reply:
        if request.body.get("model") == "expert":
            return Reply(content="专家：80", usage=(byte_tokens(request), 40))
        if any(m.get("role") == "tool" for m in request.messages):
            return Reply(content="80", usage=(byte_tokens(request), 5))
        call = {"id": "c1", "type": "function",
                "function": {"name": "ask_expert", "arguments": json.dumps({"question": QUESTION})}}
        return Reply(content=None, tool_calls=(call,), usage=(byte_tokens(request), 30))

    cap = 0.2
    with ScriptedOpenAIServer(overshooting(script, factor=2), latency_s=0.05) as server:
        orchestrator = OpenAICompatBackend("m", server.base_url, price=PRICE, **FAST)
        expert = OpenAICompatBackend("expert", server.base_url, price=PRICE, stream=True, **FAST)
        ask = expert_tool("ask_expert", expert, description="an expert", card=PRICE.card(), max_tokens=64)
        env = _Archive(ask)
        budget = Budget(cap)
        settings = EpisodeSettings(sampling=SAMPLING, budget=budget, limits=Limits(max_turns=3))
        results = await run_many(env, env.tasks(), orchestrator, settings, concurrency=EPISODES)
        await orchestrator.aclose()
        await expert.aclose()
        assert server.max_in_flight >= 8
        experts_asked = sum(1 for r in server.requests if r.body and r.body.get("model") == "expert")
    assert experts_asked > 0
    assert budget.spent_usd <= cap and budget.reserved_usd == 0
    spent = sum(r.trajectory.cost_usd for r in results)
    assert spent == pytest.approx(budget.spent_usd + budget.disputed_usd, abs=1e-9)
    assert any(r.trajectory.termination is Termination.BUDGET for r in results)
    with pytest.raises(BudgetExceeded):  # the run is spent: a further call is refused before it is sent
        budget.reserve(orchestrator.max_cost_usd([Message("user", QUESTION)], [], SAMPLING))


def test_budget_settles_at_most_the_reservation_and_keeps_the_excess_as_disputed():
    budget = Budget(0.375)  # binary-exact amounts: the check below is exact
    first = budget.reserve(0.125)
    second = budget.reserve(0.25)
    with pytest.raises(BudgetExceeded):
        budget.reserve(1e-12)
    budget.settle(first, 0.3125)  # a provider that ignored its limit
    assert budget.spent_usd == 0.125 and budget.disputed_usd == 0.1875
    budget.settle(second, 0.0625)
    assert budget.spent_usd == 0.1875 and budget.remaining_usd == 0.0
    with pytest.raises(BudgetExceeded):  # disputed money counts before another call may start
        budget.reserve(0.001)
    child = Budget(1.0).child(0.2)
    r = child.reserve(0.2)
    child.settle(r, 0.3)
    assert child.spent_usd == pytest.approx(0.2) and child._parent.spent_usd == pytest.approx(0.2)


def _call(name, **arguments):
    from orchestra.types import ToolCall

    return ToolCall(f"call_{name}", name, arguments)


async def test_f14_an_expert_call_abandoned_at_its_timeout_is_charged_its_worst_case():
    """What an abandoned paid call was billed is unknown: the reservation is charged, never $0."""
    with ScriptedOpenAIServer(latency_s=2.0) as server:
        expert = OpenAICompatBackend("expert", server.base_url, price=PRICE, **FAST)
        ask = expert_tool("ask_expert", expert, description="an expert", card=PRICE.card(), max_tokens=128,
                          timeout_s=0.2)
        observation = await Toolbox.of([ask]).call(_call("ask_expert", question=QUESTION))
        await expert.aclose()
        assert len(server.requests) == 1  # the request was sent: the provider may be generating it
    assert observation.status == "tool_error" and "timed out" in observation.content
    assert observation.cost_usd > 0 and observation.cost_usd == pytest.approx(ask.max_cost_usd({"question": QUESTION}))
