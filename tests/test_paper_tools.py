"""The paper's models-as-tools (`search`, `enhance_reasoning`, `answer` with a `model` argument): parsers and the
context cap as tables, each tool run through the Toolbox against scripted experts (costs, targets, the sandbox really
running the expert's code, a real search index), failures as observations, and the pool YAML validated at load."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from orchestra.backends.pricing import ModelPrice
from orchestra.backends.scripted import ScriptedBackend
from orchestra.config import PoolConfig, load_config
from orchestra.errors import BackendError, ConfigError
from orchestra.pool import build_pool
from orchestra.search.index import build_index
from orchestra.tools.builtin.paper_tools import (
    MAX_QUERY_CHARS,
    Expert,
    expert_prompt,
    paper_tools,
    parse_answer,
    parse_code,
    parse_query,
    render_documents,
)
from orchestra.tools.builtin.search import local_search_tool
from orchestra.tools.spec import ToolContext
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message, ToolCall, Usage

PRICE = ModelPrice(2.0, 8.0)
DOCS = [
    {"id": "eiffel", "title": "Eiffel Tower", "text": "The Eiffel Tower in Paris is 330 metres tall."},
    {"id": "nile", "title": "Nile", "text": "The Nile is a river in Africa, about 6650 km long."},
    {"id": "fuji", "title": "Mount Fuji", "text": "Mount Fuji in Japan rises 3776 metres."},
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    corpus = root / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    build_index(corpus, root / "index")
    return root / "index"


@pytest.mark.parametrize(("text", "query"), [
    ("<query>Eiffel Tower height</query>", "Eiffel Tower height"),
    ("<think><query>ignored</query></think>I would search <query> first </query> then <query>second</query>",
     "second"),
    ("no tags at all", None),
    ("<query>   </query>", None),
    ("<query>" + "x" * 1000 + "</query>", "x" * MAX_QUERY_CHARS),
])
def test_parse_query(text: str, query: str | None) -> None:
    assert parse_query(text) == query


@pytest.mark.parametrize(("text", "code"), [
    ("Here:\n```python\nprint(1)\n```", "print(1)\n"),
    ("```py\na=1\n```\nthen\n```python\nprint(2)\n```", "print(2)\n"),
    ("```\nprint(3)\n```", "print(3)\n"),
    ("print(4) with no fence", None),
    ("<think>```python\nprint(5)\n```</think>no code", None),
])
def test_parse_code(text: str, code: str | None) -> None:
    assert parse_code(text) == code


@pytest.mark.parametrize(("text", "answer"), [
    ("The answer is <answer>Paris</answer>.", "Paris"),
    ("<answer>a</answer> then <answer> b </answer>", "b"),
    ("So \\boxed{\\frac{1}{2}} and finally \\boxed{42}", "42"),
    ("<answer>7</answer> and \\boxed{8}", "7"),
    ("<think>\\boxed{1}</think>just 12", "just 12"),
])
def test_parse_answer(text: str, answer: str) -> None:
    assert parse_answer(text) == answer


@pytest.mark.parametrize(("content", "expected"), [
    ([{"id": "a", "title": "A", "text": "alpha"}], "Documents:\n[1] A\nalpha"),
    ({"results": [{"url": "u", "content": "beta"}]}, "Documents:\n[1] u\nbeta"),
    ([], "Documents: none found"),
    ("1. already rendered by the search tool", "1. already rendered by the search tool"),
    ([{"text": "x" * 5000}], "Documents:\n[1] \n" + "x" * 4000),
])
def test_render_documents(content: object, expected: str) -> None:
    assert render_documents(content) == expected


def _context(problem: str, *tool_results: str) -> ToolContext:
    history = (Message("system", "sys"), Message("user", f"wrapped {problem}"),
               *(Message("tool", r, tool_call_id=str(i)) for i, r in enumerate(tool_results)))
    return ToolContext("t", "c", problem, history)


def test_expert_prompt_keeps_the_problem_and_cuts_the_oldest_context() -> None:
    context = _context("What is 2+2?", "OLD " * 50, "NEWEST-RESULT")
    full = expert_prompt(context, "Answer it.", 10_000)
    assert full.startswith("Context:\nOLD") and "NEWEST-RESULT" in full
    assert full.endswith("Problem: What is 2+2?\n\nAnswer it.") and "wrapped" not in full
    capped = expert_prompt(context, "Answer it.", 120)
    assert len(capped) <= 120
    assert "NEWEST-RESULT" in capped and "[earlier context cut]" in capped and capped.count("OLD") < 50
    assert capped.endswith("Problem: What is 2+2?\n\nAnswer it.")
    tiny = expert_prompt(_context("Q" * 500, "R"), "Answer it.", 60)
    assert len(tiny) == 60 and tiny.endswith("\n\nAnswer it.") and "R\n" not in tiny


def test_problem_falls_back_to_the_first_user_message() -> None:
    context = ToolContext("t", "c", "", (Message("user", "from history"),))
    assert "Problem: from history" in expert_prompt(context, "go", 1000)


def _expert(alias: str, script: list[str], **kwargs: object) -> Expert:
    return Expert(alias, ScriptedBackend(script, model=f"model-of-{alias}", price=PRICE), **kwargs)  # type: ignore[arg-type]


def _call(box: Toolbox, name: str, model: str, *results: str) -> object:
    context = _context("How tall is the Eiffel Tower, in feet?", *results)
    return asyncio.run(box.run_checked(ToolCall("c1", name, {"model": model}), box.tools[name], {"model": model},
                                       task_id="t", prompt=context.prompt, history=context.history))


def test_search_sends_the_experts_query_to_the_index_and_charges_the_expert(index_dir: Path) -> None:
    expert = _expert("search-1", ["<think>hmm</think><query>Eiffel Tower Paris metres</query>"])
    search = local_search_tool(index=str(index_dir), usd_per_call=0.001)
    box = Toolbox.of(paper_tools({"search-1": expert}, search=["search-1"], search_tool=search, search_k=1))
    obs = _call(box, "search", "search-1", "an earlier result")
    assert obs.status == "ok" and obs.target == "model-of-search-1"
    assert "query by search-1: Eiffel Tower Paris metres" in obs.content
    assert obs.content.index("Documents:") < obs.content.index("330 metres") and "[2]" not in obs.content
    sent = expert.backend.requests[0][0].content
    assert "an earlier result" in sent and "<query>" in sent and "Eiffel Tower, in feet" in sent
    assert obs.cost_usd == pytest.approx(PRICE.cost_usd(obs.usage) + 0.001) and obs.usage.input_tokens > 0


def test_enhance_reasoning_runs_the_experts_code_in_the_sandbox() -> None:
    code = "import sys\nprint(sum(i * i for i in range(1000)), sys.flags.isolated)"
    expert = _expert("reasoner-1", [f"Compute it:\n```python\n{code}\n```"])
    box = Toolbox.of(paper_tools({"reasoner-1": expert}, enhance_reasoning=["reasoner-1"], usd_per_second=0.5))
    obs = _call(box, "enhance_reasoning", "reasoner-1")
    assert obs.status == "ok" and obs.target == "model-of-reasoner-1"
    assert "332833500" in obs.content and "status: ok" in obs.content  # printed by the run, not by the expert
    sandbox_usd = obs.cost_usd - PRICE.cost_usd(obs.usage)
    assert 0 < sandbox_usd < 0.5 * 60  # seconds the sandbox ran, at $0.5/s


def test_enhance_reasoning_code_that_fails_or_is_missing_is_an_observation() -> None:
    expert = _expert("reasoner-1", ["```python\nraise SystemExit(3)\n```", "I cannot write code."])
    box = Toolbox.of(paper_tools({"reasoner-1": expert}, enhance_reasoning=["reasoner-1"]))
    failed = _call(box, "enhance_reasoning", "reasoner-1")
    assert failed.status == "tool_error" and "status: error" in failed.content
    missing = _call(box, "enhance_reasoning", "reasoner-1")
    assert missing.status == "tool_error" and "no ```python block" in missing.content
    assert missing.cost_usd == pytest.approx(PRICE.cost_usd(missing.usage)) and missing.cost_usd > 0


def test_answer_is_terminal_and_parsed_per_format() -> None:
    experts = {"answer-1": _expert("answer-1", ["Reasoning... <answer>984 feet</answer>"]),
               "math-1": _expert("math-1", ["so \\boxed{984}"], answer_format="boxed")}
    box = Toolbox.of(paper_tools(experts, answer=["answer-1", "math-1"]))
    spec = box.tools["answer"].spec
    assert spec.parameters["properties"]["model"]["enum"] == ["answer-1", "math-1"]
    assert "answer-1: $2/M input tokens, $8/M output tokens" in spec.description
    first = _call(box, "answer", "answer-1")
    assert first.terminal and first.content == "984 feet" and first.target == "model-of-answer-1"
    assert "<answer></answer>" in experts["answer-1"].backend.requests[0][0].content
    second = _call(box, "answer", "math-1")
    assert second.terminal and second.content == "984"
    assert "\\boxed{}" in experts["math-1"].backend.requests[0][0].content


class _Down(ScriptedBackend):
    async def complete(self, messages, tools, sampling):  # type: ignore[no-untyped-def]
        raise BackendError("endpoint down", billed_usage=Usage(100, 10))


def test_a_failing_expert_is_a_billed_error_observation_and_nothing_ends() -> None:
    expert = Expert("answer-1", _Down([], model="down", price=PRICE))
    box = Toolbox.of(paper_tools({"answer-1": expert}, answer=["answer-1"]))
    obs = _call(box, "answer", "answer-1")
    assert obs.status == "tool_error" and not obs.terminal and "endpoint down" in obs.content
    assert obs.cost_usd == pytest.approx(PRICE.cost_usd(Usage(100, 10)))


def test_an_unknown_alias_is_a_format_error_naming_the_choices() -> None:
    box = Toolbox.of(paper_tools({"answer-1": _expert("answer-1", [])}, answer=["answer-1"]))
    obs = asyncio.run(box.call(ToolCall("c", "answer", {"model": "answer-9"})))
    assert obs.status == "format_error" and "answer-1" in obs.content


def test_worst_case_covers_a_full_prompt_and_the_sandbox() -> None:
    expert = _expert("reasoner-1", [], max_context_chars=400, max_tokens=100)
    tool = paper_tools({"reasoner-1": expert}, enhance_reasoning=["reasoner-1"], usd_per_second=1.0)[0]
    worst = tool.max_cost_usd({"model": "reasoner-1"})
    assert worst >= PRICE.cost_usd(Usage(1, 100)) + 60.0


def _pool_yaml(tmp_path: Path, **paper: object) -> Path:
    data = {
        "orchestrator": {"kind": "openai", "model": "orch", "base_url": "http://127.0.0.1:9/v1"},
        "prices": {"models": {"orch": {"input": 1, "output": 1}, "exp": {"input": 3, "output": 6}}},
        "experts": {"answer-1": {"kind": "openai", "model": "exp", "base_url": "http://127.0.0.1:9/v1"}},
        "paper_tools": {"answer": ["answer-1"], **paper},
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_pool_builds_paper_tools_priced_from_the_pool(tmp_path: Path) -> None:
    pool = build_pool(load_config(_pool_yaml(tmp_path), PoolConfig))
    (answer,) = pool.tools
    assert answer.name == "answer" and "answer-1: $3/M input tokens, $6/M output tokens" in answer.spec.description


@pytest.mark.parametrize(("paper", "experts", "field"), [
    ({"search": ["search-9"]}, None, "paper_tools.search.0: unknown expert 'search-9'"),
    ({}, {"answer-1": {"kind": "openai", "model": "unpriced", "base_url": "http://127.0.0.1:9/v1"}},
     "experts.answer-1.model"),
    ({"search": ["answer-1"], "search_options": {"index": "/nonexistent/index"}}, None, "paper_tools: "),
    ({"search": ["answer-1"], "search_options": {"colour": 1}}, None, "paper_tools.search_options.colour"),
    ({"search": ["answer-1"], "search_tool": "nope"}, None, "paper_tools.search_tool: unknown tool 'nope'"),
    ({"search_k": 99}, None, "paper_tools.search_k"),
])
def test_bad_paper_tools_config_is_one_error_naming_the_field(tmp_path: Path, paper: dict[str, object],
                                                              experts: dict[str, object] | None, field: str) -> None:
    path = _pool_yaml(tmp_path, **paper)
    if experts is not None:
        data = yaml.safe_load(path.read_text())
        data["experts"] = experts
        path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("'", "'")):
        build_pool(load_config(path, PoolConfig))


def test_one_tool_per_model_form_still_builds(tmp_path: Path) -> None:
    path = _pool_yaml(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["tools"] = [{"name": "ask_exp", "expert": data["experts"]["answer-1"], "description": "an expert"}]
    path.write_text(yaml.safe_dump(data))
    names = [t.name for t in build_pool(load_config(path, PoolConfig)).tools]
    assert names == ["ask_exp", "answer"]
