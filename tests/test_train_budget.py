"""RELIABILITY F15 in training: one run-wide budget over GRPO rollouts and over a teacher's demonstration episodes.

The paid part is real HTTP: an expert model (GRPO: a tool the policy calls; SFT: the teacher itself) behind the
scripted OpenAI-compatible server on 127.0.0.1, priced per token, which bills every answer with the usage it
reports. The cap is set below what the run would spend without it, and the tests assert what the server billed:
at most the cap, with episodes stopped by the budget (so the cap really bound). The GRPO policy is a tiny random
model made to call the expert on its first turn (`first_call="required"`); it is free, so training goes on after the
budget is spent, with the expert refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from orchestra.backends.base import Sampling
from orchestra.backends.local import LocalBackend
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.config import load_config
from orchestra.envs.base import Suite
from orchestra.errors import BudgetExceeded, ConfigError
from orchestra.rollout.budget import Budget
from orchestra.rollout.guard import wrap_untrusted
from orchestra.rollout.prompt import default_prompt
from orchestra.task import Instance, Task
from orchestra.tools.spec import Tool, ToolOutput, tool
from orchestra.train import grpo_trl, sft
from orchestra.train.config import GRPOConfig, SFTConfig
from orchestra.train.mixture import (
    TrainingEnv,
    book_earlier_spend,
    collect_demonstrations,
    run_budget,
    save_spend,
)
from orchestra.types import Message, Outcome, Termination, Trajectory, Usage
from tests.envs import save_tiny_model
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, SeenRequest, byte_tokens

PRICE = ModelPrice(2.0, 8.0)
QUESTION = "What is 6 * 7?"
EXPERT_TOKENS = 64
FAST = dict(timeout_s=10.0, max_attempts=1)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def billed(request: SeenRequest) -> Reply:
    """An expert's answer, billed as a one-token-per-byte tokenizer counts the prompt and as if it had written all
    the tokens the expert may write (so a call costs nearly its reservation)."""
    return Reply(content="The answer is 42.", usage=(byte_tokens(request), EXPERT_TOKENS))


def server_bill(server: ScriptedOpenAIServer) -> float:
    """What the server billed for every completion it answered."""
    return sum(float(PRICE.cost_usd(Usage(byte_tokens(r), EXPERT_TOKENS))) for r in server.requests
               if r.path.endswith("/chat/completions"))


def paid_expert(expert: OpenAICompatBackend) -> Tool:
    """The expert as a tool whose only parameter is optional, so the policy's required first call (which forces
    the tool's structure and lets the model write required values only) is always a valid, paid call."""
    sampling = Sampling(max_tokens=EXPERT_TOKENS)

    async def ask_expert(question: str = QUESTION) -> ToolOutput:
        """Ask the paid expert model.

        Args:
            question: the question
        """
        completion = await expert.complete([Message("user", question)], [], sampling)
        return ToolOutput(completion.text, cost_usd=completion.cost_usd, usage=completion.usage, target=expert.model)

    def worst_case(arguments: dict) -> float:
        return expert.max_cost_usd([Message("user", str(arguments.get("question", QUESTION)))], [], sampling)

    return tool(ask_expert, cost=PRICE.card(), kind="generalist", max_cost=worst_case)


@dataclass(frozen=True)
class PaidLookup:
    """Tasks whose only tool is a paid expert; every episode that ends counts as solved (the grade is not tested)."""

    expert: OpenAICompatBackend
    name: str = "paid-lookup"

    def start(self, task: Task) -> Instance:
        ask = paid_expert(self.expert)

        async def grade(trajectory: Trajectory) -> Outcome:
            return Outcome(solved=trajectory.termination != Termination.BUDGET, score=1.0)

        return Instance(task, [ask], grade)


def suite(expert: OpenAICompatBackend, tasks: int) -> Suite:
    return Suite(env=PaidLookup(expert), tasks=[Task(f"q{i}", f"What is {i} * 6 + 7 - {i}?") for i in range(tasks)],
                 identity={"env": "paid-lookup"}, prompt=default_prompt, prompt_name="default",
                 observation=wrap_untrusted, observation_name="untrusted", reward_tools=["ask_expert"],
                 max_turns=2, turn_tokens=24)


def tiny_policy(folder: Path, **kwargs) -> LocalBackend:
    """The tiny random model, saved first: TRL builds its reference model from the policy's folder."""
    return LocalBackend.from_pretrained(save_tiny_model(folder), name="tiny", render_tools=False, seed=0,
                                        first_call="required", **kwargs)


def grpo_config(out: Path, cap: float | None) -> GRPOConfig:
    return GRPOConfig.model_validate({
        "lora": {"rank": 0}, "output_dir": str(out), "steps": 3, "group_size": 2, "prompts_per_step": 2,
        "learning_rate": 1e-3, "max_turns": 2, "max_tokens_per_turn": 24, "min_group_std": 0.0,
        "checkpoint": {"every_steps": 1000}, "run_budget_usd": cap})


def test_run_budget_usd_is_validated(tmp_path: Path) -> None:
    for kind in (GRPOConfig, SFTConfig):
        assert kind.model_validate({"run_budget_usd": 0.5}).run_budget_usd == 0.5
        assert kind.model_validate({}).run_budget_usd is None
        for bad in ("0", "-1", ".inf", ".nan", "lots"):
            with pytest.raises(ConfigError, match="run_budget_usd"):
                load_config(None, kind, [f"run_budget_usd={bad}"])


def test_grpo_rollouts_share_one_run_budget_and_stop_paying_when_it_is_spent(tmp_path: Path, monkeypatch) -> None:
    with ScriptedOpenAIServer(billed) as server:
        expert = OpenAICompatBackend("expert", server.base_url, price=PRICE, **FAST)
        one_call = paid_expert(expert).max_cost_usd({})
        cap = 3.5 * one_call  # 3 calls reserved at once fit; the 12 calls of 3 steps x 4 rollouts do not
        monkeypatch.setattr(grpo_trl, "load_mixture", lambda entries: [TrainingEnv(suite(expert, 4), 1.0)])
        result = grpo_trl.train_grpo(grpo_config(tmp_path / "grpo", cap), backend=tiny_policy(tmp_path / "tiny"))
        answered = len(server.requests)
        bill = server_bill(server)

    assert result.steps == 3  # the free policy kept training after the money ran out
    assert answered < 12 and bill <= cap
    # The cap bound in every step: of step 1's 4 rollouts reserving at once, 3 fit; each settles below its
    # reservation (the prompt bound is a worst case), which leaves room for fewer calls in each later step.
    assert [h["budget_stopped"] for h in result.history] == [0.25, 0.5, 0.75]
    recorded = json.loads((tmp_path / "grpo" / "run_budget.0.json").read_text())
    assert recorded["limit_usd"] == cap and bill - 1e-12 <= recorded["spent_usd"] <= cap


def test_a_priced_policy_refused_by_the_run_budget_fails_the_step_with_one_clear_error(tmp_path, monkeypatch):
    with ScriptedOpenAIServer(billed) as server:
        expert = OpenAICompatBackend("expert", server.base_url, price=PRICE, **FAST)
        monkeypatch.setattr(grpo_trl, "load_mixture", lambda entries: [TrainingEnv(suite(expert, 2), 1.0)])
        policy = tiny_policy(tmp_path / "tiny", price=ModelPrice(1000.0, 1000.0))
        with pytest.raises(BudgetExceeded, match="run_budget_usd: .* refused the policy's own call"):
            grpo_trl.train_grpo(grpo_config(tmp_path / "grpo", 1e-6), backend=policy)
        assert server.requests == []


def test_a_resumed_run_books_what_earlier_runs_spent(tmp_path: Path) -> None:
    first = run_budget(1.0)
    held = first.reserve(0.4)
    first.settle(held, 0.3)
    save_spend(first, tmp_path / "run_budget.0.json")
    again = run_budget(1.0)
    book_earlier_spend(again, tmp_path / "run_budget.0.json")
    assert again.spent_usd == pytest.approx(0.3) and again.remaining_usd == pytest.approx(0.7)
    with pytest.raises(BudgetExceeded):
        again.reserve(0.71)
    book_earlier_spend(Budget(1.0), tmp_path / "none.json")  # a run that never saved: nothing to book
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json"):
        book_earlier_spend(Budget(1.0), tmp_path / "bad.json")
    assert run_budget(None) is None and run_budget(1.0, processes=4).limit_usd == 0.25


def test_sft_teacher_demonstrations_share_one_run_budget(tmp_path: Path, monkeypatch) -> None:
    """`orchestra train sft` with a paid teacher: the cap binds across its episodes, and the episodes it stopped are
    never kept as demonstrations (not even with keep: all)."""
    with ScriptedOpenAIServer(billed) as server:
        teacher = OpenAICompatBackend("teacher", server.base_url, price=PRICE, **FAST)
        tasks = 8
        monkeypatch.setattr(sft, "load_mixture", lambda entries: [TrainingEnv(suite(teacher, tasks), 1.0)])
        sampling = Sampling(max_tokens=512)  # the teacher's turn budget (mixture.py)
        one_episode = teacher.max_cost_usd(default_prompt(Task("q0", "What is 0 * 6 + 7 - 0?"), [], None), [],
                                           sampling)
        cap = 3.5 * one_episode * 2  # the prompt lists the tool, so an episode reserves more: ~2-3 of 8 run
        config = SFTConfig.model_validate({
            "demonstrations": {"source": "teacher", "keep": "all"}, "lora": {"rank": 0},
            "output_dir": str(tmp_path / "sft"), "examples": tasks, "epochs": 1, "examples_per_step": 4,
            "checkpoint": {"every_steps": 1000}, "run_budget_usd": cap})
        tok = tiny_tokenizer()
        result = sft.train_sft(config, backend=LocalBackend(tiny_model(tok, seed=0), tok, name="tiny",
                                                            render_tools=False), teacher=teacher)
        answered = len(server.requests)
        bill = server_bill(server)
    assert 1 <= answered < tasks and bill <= cap and result.steps >= 1

    with ScriptedOpenAIServer(billed) as server:  # the same collection, looked at directly
        teacher = OpenAICompatBackend("teacher", server.base_url, price=PRICE, **FAST)
        budget = run_budget(cap)
        demos = asyncio.run(collect_demonstrations([TrainingEnv(suite(teacher, tasks), 1.0)], tasks, 0,
                                                   source="teacher", teacher=teacher, keep_unsolved=True,
                                                   budget=budget))
        answered = len(server.requests)
    assert 1 <= answered < tasks and budget.spent_usd <= cap
    kept = {example.task.id for example, _ in demos}
    assert len(kept) == answered  # one per paid episode: the episodes the cap stopped were not kept
    assert all(t.termination == Termination.FINAL_MESSAGE for _, t in demos)
