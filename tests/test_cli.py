"""The CLI faces: `orchestra run` over a pool of real HTTP endpoints, `tool call`, `show-config`, `env check`."""

import json

import yaml
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.trajectory import read_trajectories
from tests.servers.scripted_openai import ScriptedOpenAIServer, tool_then_answer

runner = CliRunner()


def write_pool(path, base_url, **extra):
    pool = {
        "orchestrator": {"kind": "openai", "model": "qwen3-8b", "base_url": base_url, "api_key_env": "TEST_KEY",
                         "max_attempts": 1, "timeout_s": 5},
        "tools": [{"builtin": "calculator"}],
        "limits": {"max_turns": 4, "budget_usd": 0.5},
        **extra,
    }
    path.write_text(yaml.safe_dump(pool))
    return path


def test_run_prints_the_answer_and_the_breakdown_and_saves_the_trajectory(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-test-0123456789abcdef0123")
    with ScriptedOpenAIServer(tool_then_answer("calculator", {"expression": "17 * 23 + 4"}, answer="395")) as server:
        pool = write_pool(tmp_path / "pool.yaml", server.base_url)
        result = runner.invoke(app, ["run", "What is 17 * 23 + 4?", "--pool", str(pool),
                                     "--save", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 0, result.output
    assert "answer: 395" in result.output and "calculator" in result.output and "final_message" in result.output
    (trajectory,) = read_trajectories(tmp_path / "t.jsonl")
    assert trajectory.turns[0].observations[0].content == "395"
    assert trajectory.orchestrator_cost_usd > 0  # the orchestrator's own tokens are priced (qwen3-8b)
    assert "sk-test-0123456789abcdef0123" not in (tmp_path / "t.jsonl").read_text()


def test_run_json_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    with ScriptedOpenAIServer(tool_then_answer("calculator", {"expression": "2+2"}, answer="4")) as server:
        pool = write_pool(tmp_path / "pool.yaml", server.base_url)
        result = runner.invoke(app, ["run", "2+2?", "--pool", str(pool), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["answer"] == "4" and summary["calls"] == {"calculator": 1} and summary["turns"] == 2


def test_a_model_without_a_price_fails_at_load_naming_the_field(tmp_path):
    pool = write_pool(tmp_path / "pool.yaml", "http://127.0.0.1:9/v1")
    data = yaml.safe_load(pool.read_text())
    data["tools"].append({"name": "mystery", "expert": {"kind": "openai", "model": "mystery-model",
                                                         "base_url": "http://127.0.0.1:9/v1"}})
    pool.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["run", "q", "--pool", str(pool)])
    assert result.exit_code == 2
    assert "tools.1.expert.model" in result.output and "mystery-model" in result.output


def test_bad_config_values_name_the_field(tmp_path):
    pool = write_pool(tmp_path / "pool.yaml", "http://127.0.0.1:9/v1")
    result = runner.invoke(app, ["show-config", str(pool), "--set", "limits.max_turns=0"])
    assert result.exit_code == 2 and "limits.max_turns" in result.output
    result = runner.invoke(app, ["show-config", str(pool), "--set", "orchestrator.colour=red"])
    assert result.exit_code == 2 and "orchestrator.colour" in result.output


def test_tool_call_runs_one_tool_and_reports_errors_as_observations():
    ok = runner.invoke(app, ["tool", "call", "calculator", '{"expression": "2 ** 10 / 4"}'])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["content"] == "256"
    bad = runner.invoke(app, ["tool", "call", "calculator", '{"expr": "1"}'])
    assert bad.exit_code == 1 and json.loads(bad.output)["status"] == "format_error"
    refused = runner.invoke(app, ["tool", "call", "calculator", '{"expression": "__import__(\'os\')"}'])
    assert refused.exit_code == 1 and json.loads(refused.output)["status"] == "tool_error"


def test_show_config_prints_the_resolved_default_pool_and_training_trees():
    result = runner.invoke(app, ["show-config"])
    assert result.exit_code == 0 and "smollm2-135m-instruct" in result.output
    for kind in ("sft", "grpo"):
        result = runner.invoke(app, ["show-config", "--kind", kind, "--set", "seed=3"])
        assert result.exit_code == 0 and "seed: 3" in result.output


def test_env_check_tau(data_dir):
    result = runner.invoke(app, ["env", "check", "tau", "--domain", str(data_dir / "tau2" / "mock")])
    assert result.exit_code == 0, result.output
    assert "10 tasks" in result.output
