"""Orchestrator-8B as released: `orchestra run --pool examples/pool_toolorchestra.yaml` against scripted HTTP servers.

The orchestrator server replays Orchestrator-8B-shaped turns (`<think>` then a hermes `<tool_call>` naming a tool and
an expert alias: search -> enhance_reasoning -> answer); the experts are a second scripted server; the search goes to
a real index; the code runs in the sandbox. The test asserts the release's prompt and tool shapes reached the model,
every call ran, and each call's cost is the pool's price x the scripted usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.backends.pricing import PriceTable
from orchestra.cli import app
from orchestra.search.index import build_index
from orchestra.trajectory import read_trajectories
from orchestra.types import Termination, Usage
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, SeenRequest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pool_toolorchestra.yaml"
QUESTION = "How tall is the Eiffel Tower in feet, rounded to the nearest foot?"
ORCHESTRATOR_TURNS = [
    ("<think>\nI do not know the height. Let me search with a cheap model.\n</think>\n\n", "search", "search-2", 900, 40),
    ("<think>\n330 metres. Convert with code.\n</think>\n\n", "enhance_reasoning", "reasoner-3", 1400, 35),
    ("<think>\nThe code printed 1083.\n</think>\n\n", "answer", "answer-4", 1900, 30),
]
EXPERT_USAGE = {"query": (300, 20), "code": (420, 64), "answer": (510, 12)}


def _orchestrator(request: SeenRequest) -> Reply:
    done = sum(1 for m in request.messages if m.get("role") == "tool")
    think, name, model, prompt_tokens, completion_tokens = ORCHESTRATOR_TURNS[min(done, 2)]
    call = json.dumps({"name": name, "arguments": {"model": model}})
    return Reply(content=f"{think}<tool_call>\n{call}\n</tool_call>", usage=(prompt_tokens, completion_tokens))


def _expert(request: SeenRequest) -> Reply:
    instruction = request.messages[-1]["content"].rsplit("\n\n", 1)[-1]  # the context may quote earlier code
    if "<query></query>" in instruction:
        return Reply("<think>short query</think><query>Eiffel Tower height metres</query>", usage=EXPERT_USAGE["query"])
    if "```python" in instruction:
        return Reply("```python\nprint(round(330 * 3.28084))\n```", usage=EXPERT_USAGE["code"])
    return Reply("330 m is 1082.68 ft, so \\boxed{1083}", usage=EXPERT_USAGE["answer"])


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    docs = [{"id": "eiffel", "title": "Eiffel Tower", "text": "The Eiffel Tower in Paris is 330 metres tall."},
            {"id": "nile", "title": "Nile", "text": "The Nile is a river in Africa, about 6650 km long."}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    build_index(tmp_path / "docs.jsonl", tmp_path / "index")
    return tmp_path / "index"


def test_orchestrator_8b_turns_run_unchanged_and_every_call_is_costed(
        tmp_path: Path, index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-used-for-real")
    saved = tmp_path / "trajectory.jsonl"
    with ScriptedOpenAIServer(_orchestrator) as orchestrator, ScriptedOpenAIServer(_expert) as experts:
        import yaml

        aliases = yaml.safe_load(EXAMPLE.read_text())["experts"]
        overrides = [f"orchestrator.base_url={orchestrator.base_url}",
                     f"paper_tools.search_options.index={index_dir}"]
        overrides += [f"experts.{alias}.base_url={experts.base_url}" for alias in aliases]
        args = ["run", QUESTION, "--pool", str(EXAMPLE), "--json", "--save", str(saved)]
        for item in overrides:
            args += ["--set", item]
        result = CliRunner().invoke(app, args)
        orchestrator_requests, expert_requests = orchestrator.requests, experts.requests
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["answer"] == "1083"

    first = orchestrator_requests[0].body or {}
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][0]["content"] == "You are good at using tools."
    assert first["messages"][1]["content"] == f"Problem: {QUESTION}\n\nChoose an appropriate tool."
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert list(tools) == ["search", "enhance_reasoning", "answer"]
    assert all(list(f["parameters"]["properties"]) == ["model"] for f in tools.values())
    assert "search-2: $0.25/M input, $2/M output, ~16 s" in tools["search"]["description"]
    assert tools["answer"]["parameters"]["properties"]["model"]["enum"] == ["answer-1", "answer-2", "answer-4",
                                                                           "math-1"]
    tool_message = next(m for m in orchestrator_requests[1].body["messages"] if m["role"] == "tool")
    assert "Documents:" in tool_message["content"] and "<tool_output" not in tool_message["content"]

    assert len(expert_requests) == 3
    code_prompt = expert_requests[1].body["messages"][-1]["content"]
    assert "330 metres" in code_prompt and QUESTION in code_prompt  # the expert saw the search's documents
    assert [r.body["model"] for r in expert_requests] == ["gpt-5-mini", "qwen2.5-coder-32b", "qwen3-32b"]

    (trajectory,) = read_trajectories(saved)
    assert trajectory.termination == Termination.ANSWERED and trajectory.final_answer == "1083"
    observations = [o for t in trajectory.turns for o in t.observations]
    assert [(o.name, o.target, o.status) for o in observations] == [
        ("search", "gpt-5-mini", "ok"), ("enhance_reasoning", "qwen2.5-coder-32b", "ok"),
        ("answer", "qwen3-32b", "ok")]
    assert "1083" in observations[1].content and "status: ok" in observations[1].content  # printed by the sandbox
    prices = PriceTable.default()
    expected = [prices.model(m).cost_usd(Usage(*EXPERT_USAGE[k]))
                for m, k in (("gpt-5-mini", "query"), ("qwen2.5-coder-32b", "code"), ("qwen3-32b", "answer"))]
    assert observations[0].cost_usd == pytest.approx(expected[0], rel=1e-9)
    sandbox_usd = observations[1].cost_usd - expected[1]
    assert 0 < sandbox_usd < 60 * 8.3e-6  # the sandbox seconds, at the sandbox's price
    assert observations[2].cost_usd == pytest.approx(expected[2], rel=1e-9)
    assert [o.usage for o in observations] == [Usage(*EXPERT_USAGE[k]) for k in ("query", "code", "answer")]
    assert trajectory.tool_cost_usd == pytest.approx(sum(o.cost_usd for o in observations))
    assert trajectory.orchestrator_cost_usd == 0.0  # priced at $0 in the example (your own GPU)
    assert [t.completion.usage for t in trajectory.turns] == [Usage(p, c) for *_, p, c in ORCHESTRATOR_TURNS]


def test_the_profile_runs_in_eval_over_a_qa_file_and_the_experts_answer_is_graded(
        tmp_path: Path, index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from orchestra.evaluate.store import read_items

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-used-for-real")
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"id": "eiffel-ft", "question": QUESTION, "answer": "1083",
                                "answer_type": "exactMatch"}) + "\n")
    with ScriptedOpenAIServer(_orchestrator) as orchestrator, ScriptedOpenAIServer(_expert) as experts:
        pool = yaml.safe_load(EXAMPLE.read_text())
        pool["orchestrator"]["base_url"] = orchestrator.base_url
        pool["paper_tools"]["search_options"]["index"] = str(index_dir)
        for expert in pool["experts"].values():
            expert["base_url"] = experts.base_url
        (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
        result = CliRunner().invoke(app, ["eval", "qa", "--data", str(data), "-o", "prompted:orchestrator-8b",
                                          "--pool", str(tmp_path / "pool.yaml"), "--out", str(tmp_path / "out"),
                                          "--no-progress"])
        first = orchestrator.requests[0].body or {}
    assert result.exit_code == 0, result.output
    assert first["messages"][0]["content"].startswith("You are good at using tools.")
    assert first["messages"][1]["content"] == f"Problem: {QUESTION}\n\nChoose an appropriate tool."
    assert [t["function"]["name"] for t in first["tools"]] == ["search", "enhance_reasoning", "answer"]
    (items_file,) = (tmp_path / "out").rglob("items.jsonl")
    (item,) = read_items(items_file)
    assert item["task_id"] == "eiffel-ft" and item["solved"] and item["termination"] == "answered"
    assert item["tool_counts"] == {"gpt-5-mini": 1, "qwen2.5-coder-32b": 1, "qwen3-32b": 1}  # counted per model
    assert item["cost_usd"] > 0
