"""An HLE/FRAMES-style episode end to end: the bundled SmolLM2 orchestrates `local_search` over a real index,
`enhance_reasoning` with a local expert and the code sandbox, and `answer`; every call is executed and costed.

What is forced and what the model chooses (SmolLM2-135M untrained never calls tools by itself):
- The ORDER of the tools is forced: turn i offers the grammar of `orchestra.backends.first_call.required_call`
  only the i-th of (local_search, enhance_reasoning, answer), while the model reads all three tools in its prompt.
  The grammar forces the call's structure and its tool name; the model writes the rest:
  the `query` of local_search (free text, sampled), and the `model` of enhance_reasoning (reasoner-1 or reasoner-2)
  and of answer (answer-1 only, so forced), chosen among the enum by the model's own likelihood.
- Nothing else is forced: the experts (SmolLM2 too, as separate priced backends over the same weights) write their
  code and answer freely, greedily; the code runs in the sandbox whatever it is. The final answer is not graded
  (a 135M model is not expected to be right); the test asserts that each tool really ran and each call was costed.

The fast test at the end checks the grammar's enum choice with a tiny random model (it runs in `make test`).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from orchestra.backends.base import Sampling
from orchestra.backends.first_call import required_call
from orchestra.backends.local import LocalBackend
from orchestra.backends.pricing import ModelPrice
from orchestra.preferences import Limits
from orchestra.rollout.episode import run_episode
from orchestra.sandbox import SandboxLimits
from orchestra.search.index import build_index
from orchestra.task import Task
from orchestra.toolcalls import parse_tool_calls
from orchestra.tools.builtin.paper_tools import Expert, paper_tools
from orchestra.tools.builtin.search import local_search_tool
from orchestra.tools.spec import ToolSpec
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Completion, Message, Termination, Usage

DOCS = Path("/usr/share/doc/python3.11/html/_sources/library")
PAGES = ("math", "statistics", "fractions", "decimal")
STAGES = ("local_search", "enhance_reasoning", "answer")
QUESTION = "Python math.comb: how many ways to choose 3 of 10 items?"
"""Short, so that SmolLM2's query has indexed words: with this test's tools and prices it writes '10' (greedy; the
it matches passages of the math and statistics pages); for longer FRAMES-like wordings of the same question it wrote
'n', '' or 'number_of_ways_to_choose_k_items', none of which matches any passage. It then chose reasoner-1, whose
code printed 210, and answer-1 repeated that code: the model's choices, recorded, not graded."""
ORCHESTRATOR_PRICE = ModelPrice(0.05, 0.10)  # a self-hosted model's amortized price, so costs are not all zero
EXPERT_PRICES = {"reasoner-1": ModelPrice(0.2, 0.8), "reasoner-2": ModelPrice(0.1, 0.4),
                 "answer-1": ModelPrice(0.3, 1.2)}
SEARCH_USD = 0.001
SANDBOX_USD_PER_S = 0.01


class StagedOrchestrator:
    """A ChatBackend over a LocalBackend whose turn i is one grammar-decoded call of the tool STAGES[i] (see the
    module docstring); the prompt renders every offered tool, so the model reads the whole tool set."""

    def __init__(self, inner: LocalBackend):
        self.inner = inner
        self.price = inner.price

    @property
    def model(self) -> str:
        return self.inner.model

    def max_cost_usd(self, messages: list[Message], tools: list[ToolSpec], sampling: Sampling) -> float:
        return self.inner.max_cost_usd(messages, tools, sampling)

    async def complete(self, messages: list[Message], tools: list[ToolSpec], sampling: Sampling) -> Completion:
        stage = STAGES[min(sum(m.role == "assistant" for m in messages), len(STAGES) - 1)]
        prompt_ids = self.inner.prompt_ids(messages, tools)
        offered = [t for t in tools if t.name == stage]
        ids, logprobs, finish = await required_call(self.inner, prompt_ids, offered, sampling)
        tokenizer = self.inner.tokenizer
        text = tokenizer.decode(list(ids[:-1]), skip_special_tokens=False)
        visible, calls = parse_tool_calls(text, id_prefix=f"call_{stage}_")
        usage = Usage(len(prompt_ids), len(ids))
        return Completion(text=visible, tool_calls=tuple(calls), usage=usage, cost_usd=self.price.cost_usd(usage),
                          finish_reason=finish, model=self.model, prompt_ids=prompt_ids, completion_ids=ids,
                          logprobs=logprobs)


def python_docs_corpus(path: Path) -> dict[str, str]:
    """Paragraph passages of a few pages of Debian's Python 3.11 documentation, written as a JSONL corpus;
    returns id -> text."""
    docs: dict[str, str] = {}
    with path.open("w", encoding="utf-8") as out:
        for page in PAGES:
            text = (DOCS / f"{page}.rst.txt").read_text(encoding="utf-8")
            for n, paragraph in enumerate(p for p in re.split(r"\n\s*\n", text) if len(p.split()) >= 8):
                doc = {"id": f"{page}#{n}", "title": f"library/{page}", "text": " ".join(paragraph.split())}
                docs[doc["id"]] = doc["text"]
                out.write(json.dumps(doc) + "\n")
    return docs


@pytest.mark.integration
def test_smollm2_orchestrates_search_code_and_answer_and_every_call_is_costed(tmp_path: Path) -> None:
    if not DOCS.is_dir():
        pytest.skip(f"corpus {DOCS} missing: apt-get install -y python3.11-doc (.ci/run does)")
    corpus = python_docs_corpus(tmp_path / "docs.jsonl")
    build_index(tmp_path / "docs.jsonl", tmp_path / "index")

    orchestrator = LocalBackend.smollm2(price=ORCHESTRATOR_PRICE)
    lm, tokenizer = orchestrator.lm, orchestrator.tokenizer
    experts = {alias: Expert(alias, LocalBackend(lm, tokenizer, name=f"smollm2-{alias}", price=price),
                             max_context_chars=3_000, max_tokens=128 if alias != "answer-1" else 48)
               for alias, price in EXPERT_PRICES.items()}
    search = local_search_tool(index=str(tmp_path / "index"), usd_per_call=SEARCH_USD)
    tools = [search, *paper_tools(experts, enhance_reasoning=["reasoner-1", "reasoner-2"], answer=["answer-1"],
                                  code_limits=SandboxLimits(wall_s=10.0), usd_per_second=SANDBOX_USD_PER_S)]
    task = Task("math-comb", QUESTION)
    trajectory = asyncio.run(run_episode(task, StagedOrchestrator(orchestrator), Toolbox.of(tools),
                                         limits=Limits(max_turns=4), sampling=Sampling(max_tokens=64)))

    assert trajectory.termination == Termination.ANSWERED, trajectory.error
    observations = trajectory.observations
    assert [o.name for o in observations] == list(STAGES)
    searched, reasoned, answered = observations
    calls = trajectory.calls
    query = calls[0].arguments["query"]
    print(f"\nmodel's query: {query!r}; reasoner: {calls[1].arguments['model']}\n{reasoned.content}\n"
          f"answer: {answered.content!r}")

    # The index was really searched: passages of the corpus came back, at the tool's price.
    assert searched.status == "ok" and query.strip()
    hits = json.loads(searched.content)
    assert hits and all(corpus.get(h["id"], "").startswith(h["text"][:40]) for h in hits)
    assert searched.cost_usd == pytest.approx(SEARCH_USD)

    # The chosen local expert wrote code and the sandbox ran it: its status line and its seconds are on the bill.
    alias = calls[1].arguments["model"]
    assert alias in ("reasoner-1", "reasoner-2") and reasoned.target == f"smollm2-{alias}"
    assert f"code by {alias}:" in reasoned.content and re.search(r"^status: \w+", reasoned.content, re.M), \
        reasoned.content
    expert_usd = EXPERT_PRICES[alias].cost_usd(reasoned.usage)
    assert reasoned.usage.output_tokens > 0 and expert_usd > 0
    assert 0 < reasoned.cost_usd - expert_usd < SANDBOX_USD_PER_S * 12  # sandbox seconds, within its wall limit

    # The answer expert answered, terminally, at its price; the final answer is its text.
    assert answered.terminal and answered.target == "smollm2-answer-1"
    assert answered.cost_usd > 0
    assert answered.cost_usd == pytest.approx(EXPERT_PRICES["answer-1"].cost_usd(answered.usage), rel=1e-9)
    assert trajectory.final_answer == answered.content

    # Every orchestrator turn is costed at its price; the totals are the sums.
    assert len(trajectory.turns) == 3
    for turn in trajectory.turns:
        assert turn.completion.usage.input_tokens > 0
        assert turn.completion.cost_usd > 0
        assert turn.completion.cost_usd == pytest.approx(ORCHESTRATOR_PRICE.cost_usd(turn.completion.usage))
    assert trajectory.cost_usd == pytest.approx(sum(t.completion.cost_usd for t in trajectory.turns)
                                                + sum(o.cost_usd for o in observations))


async def test_the_grammar_chooses_an_enum_value_among_the_allowed_ones() -> None:
    """A required string enum (an expert alias) is chosen among its values, never written freely."""
    from orchestra.backends.tiny import tiny_model, tiny_tokenizer
    from orchestra.tools.spec import tool

    def answer(model: str) -> str:
        """Answer with a model.

        Args:
            model: which model
        """
        return model

    spec = tool(answer).spec
    aliases = ["answer-1", "math-1", "gpt-5-mini"]
    spec = ToolSpec(name=spec.name, description=spec.description, parameters={
        "type": "object", "properties": {"model": {"type": "string", "enum": aliases}}, "required": ["model"]})
    tok = tiny_tokenizer()
    chosen = set()
    for seed in range(4):
        backend = LocalBackend(tiny_model(tok, seed=seed), tok, name="tiny")
        prompt = backend.prompt_ids([Message("user", "Which model?")], [spec])
        ids, _, finish = await required_call(backend, prompt, [spec], Sampling(max_tokens=64))
        _, calls = parse_tool_calls(tok.decode(list(ids[:-1]), skip_special_tokens=False))
        assert finish == "stop" and len(calls) == 1 and calls[0].error is None
        chosen.add(calls[0].arguments["model"])
    assert chosen <= set(aliases)
