"""`orchestra describe`: a model runs sampled tasks, a describer reads tasks, trajectories and pass/fail and writes the
description, which lands in the pool entry. Scripted HTTP models make it deterministic; one integration test has the
bundled SmolLM2 both solve and describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.commands.describe import sample_tasks
from orchestra.config import PoolConfig, load_config
from orchestra.task import Task
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, SeenRequest

DESCRIPTION = "Strong on European geography; weak on arithmetic, where it guesses."
QUESTIONS = [
    {"id": "capital", "question": "What is the capital of France?", "answer": "Paris", "answer_type": "exactMatch"},
    {"id": "sum", "question": "What is 17 + 25?", "answer": "42", "answer_type": "exactMatch"},
    {"id": "river", "question": "Which river flows through Paris?", "answer": "Seine", "answer_type": "exactMatch"},
]
GUESSES = {"capital": "Paris", "sum": "40", "river": "Seine"}


def _solver(request: SeenRequest) -> Reply:
    question = next(m["content"] for m in request.messages if m["role"] == "user")
    key = next(q["id"] for q in QUESTIONS if q["question"] in question)
    call = json.dumps({"name": "answer", "arguments": {"text": GUESSES[key]}})
    return Reply(f"<think>easy</think><tool_call>{call}</tool_call>", usage=(100, 10))


def _pool(tmp_path: Path, solver_url: str, describer_url: str) -> Path:
    data = {
        "orchestrator": {"kind": "openai", "model": "writer-m", "base_url": describer_url},
        "prices": {"models": {"writer-m": {"input": 1, "output": 2}, "solver-m": {"input": 3, "output": 6}}},
        "tools": [{"name": "geo_expert", "expert": {"kind": "openai", "model": "solver-m", "base_url": solver_url}}],
        "experts": {"answer-1": {"kind": "openai", "model": "solver-m", "base_url": solver_url}},
        "paper_tools": {"answer": ["answer-1"]},
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def test_describe_runs_the_model_and_writes_the_describers_text_into_the_pool(tmp_path: Path, qa_file: Path) -> None:
    with ScriptedOpenAIServer(_solver) as solver, ScriptedOpenAIServer(
            lambda r: Reply(f"<think>two of three</think>{DESCRIPTION}", usage=(400, 20))) as describer:
        pool = _pool(tmp_path, solver.base_url, describer.base_url)
        out = tmp_path / "described.yaml"
        result = CliRunner().invoke(app, ["describe", "--model", "solver-m", "--env", "qa", "--data", str(qa_file),
                                          "--tasks", "10", "--pool", str(pool), "--write", str(out)])
        solved_requests, described = solver.requests, describer.requests
    assert result.exit_code == 0, result.output
    assert DESCRIPTION in result.stdout and "solved 2 of 3" in result.output
    assert len(solved_requests) == 3 and len(described) == 1
    prompt = described[0].body["messages"][-1]["content"]
    assert prompt.count("PASS") == 2 and prompt.count("FAIL") == 1
    assert "What is 17 + 25?" in prompt and "Answer: 40" in prompt and "Tool calls: answer" in prompt
    assert "42" not in prompt  # the gold answer of the failed task is never shown
    written = load_config(out, PoolConfig)
    assert written.tools[0].description == DESCRIPTION and written.experts["answer-1"].description == DESCRIPTION
    assert yaml.safe_load(pool.read_text())["tools"][0].get("description") is None  # --write went elsewhere


def test_describe_by_alias_writes_only_that_entry_and_uses_the_named_describer(tmp_path: Path, qa_file: Path) -> None:
    with ScriptedOpenAIServer(_solver) as solver, ScriptedOpenAIServer(lambda r: Reply(DESCRIPTION)) as describer:
        pool = _pool(tmp_path, solver.base_url, "http://127.0.0.1:9/v1")  # the orchestrator is never called
        data = yaml.safe_load(pool.read_text())
        data["experts"]["writer"] = {"kind": "openai", "model": "writer-m", "base_url": describer.base_url}
        pool.write_text(yaml.safe_dump(data, sort_keys=False))
        out = tmp_path / "out.yaml"
        result = CliRunner().invoke(app, ["describe", "--model", "answer-1", "--env", "qa", "--data", str(qa_file),
                                          "--tasks", "1", "--describer", "writer", "--pool", str(pool),
                                          "--write", str(out)])
        solver_calls, describer_calls = len(solver.requests), len(describer.requests)
    assert result.exit_code == 0, result.output
    assert (solver_calls, describer_calls) == (1, 1)
    written = load_config(out, PoolConfig)
    assert written.experts["answer-1"].description == DESCRIPTION and written.tools[0].description is None


def test_a_describer_that_writes_nothing_is_one_error_and_nothing_is_written(tmp_path: Path, qa_file: Path) -> None:
    with ScriptedOpenAIServer(_solver) as solver, ScriptedOpenAIServer(
            lambda r: Reply("<think>hmm</think>")) as describer:
        pool = _pool(tmp_path, solver.base_url, describer.base_url)
        out = tmp_path / "out.yaml"
        result = CliRunner().invoke(app, ["describe", "--model", "geo_expert", "--env", "qa", "--data", str(qa_file),
                                          "--pool", str(pool), "--write", str(out)])
    assert result.exit_code == 1 and "wrote no description" in result.output and not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nope"], "model 'nope' is not in the pool; its models: answer-1, geo_expert, solver-m, writer-m"),
    (["--model", "writer-m", "--write", "x.yaml"], "orchestrator, which has no description to write"),
    (["--model", "solver-m", "--describer", "ghost"], "model 'ghost' is not in the pool"),
])
def test_bad_names_are_one_line_before_any_model_runs(tmp_path: Path, qa_file: Path, args: list[str],
                                                      message: str) -> None:
    pool = _pool(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    result = CliRunner().invoke(app, ["describe", "--env", "qa", "--data", str(qa_file), "--pool", str(pool), *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sample_tasks_is_seeded_and_keeps_order() -> None:
    tasks = [Task(id=str(i), prompt=str(i)) for i in range(20)]
    first, again, other = sample_tasks(tasks, 5, 0), sample_tasks(tasks, 5, 0), sample_tasks(tasks, 5, 1)
    assert [t.id for t in first] == [t.id for t in again] and first != other
    assert [int(t.id) for t in first] == sorted(int(t.id) for t in first) and len(set(t.id for t in first)) == 5
    assert sample_tasks(tasks[:3], 10, 0) == tasks[:3]


@pytest.mark.integration
def test_smollm2_describes_itself(tmp_path: Path, qa_file: Path) -> None:
    result = CliRunner().invoke(app, ["describe", "--model", "smollm2-135m-instruct", "--env", "qa", "--data",
                                      str(qa_file), "--tasks", "2", "--max-turns", "2"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and len(" ".join(lines).split()) >= 3, result.output
