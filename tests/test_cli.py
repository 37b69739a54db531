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


# ---- one line for every bad input (issue 18) --------------------------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.servers.scripted_openai import Reply, always, unused_port  # noqa: E402


def one_line_error(result, code: int) -> str:
    """The run failed with `code`, wrote exactly one line on stderr, and nothing that looks like a traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["show-config", "--set", "tools.5.name=x"], "tools.5"),
    (["run", "q", "--set", "tools.5.name=x"], "tools.5"),
    (["show-config", "--set", "limits.max_turns=[1"], "limits.max_turns"),
    (["run", "q", "--prices", "missing.yaml"], "missing.yaml"),
    (["tool", "list", "--pool", "nope.yaml"], "nope.yaml"),
    (["tool", "call", "calculator", "{bad"], "ARGUMENTS"),
    (["show-config", "--kind", "zz"], "--kind"),
    (["run", "q", "--no-such-option"], "--no-such-option"),
])
def test_bad_inputs_give_one_line_and_exit_2(args, needle):
    assert needle in one_line_error(runner.invoke(app, args), 2)


def test_show_config_of_a_directory_is_one_line(tmp_path):
    assert "is a directory" in one_line_error(runner.invoke(app, ["show-config", str(tmp_path)]), 2)


def test_error_text_is_printed_literally_never_as_markup(tmp_path):
    weird = tmp_path / "a[red]b[bold].yaml"
    weird.write_text('"[/red]": 1\n')  # a field named like a closing markup tag
    line = one_line_error(runner.invoke(app, ["show-config", str(weird)]), 2)
    assert "a[red]b[bold].yaml" in line and "[/red]: unknown field" in line


def test_a_markup_looking_answer_prints_literally(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    with ScriptedOpenAIServer(always(Reply(content="[/red] 4 [bold]"))) as server:
        pool = write_pool(tmp_path / "pool.yaml", server.base_url)
        result = runner.invoke(app, ["run", "2+2?", "--pool", str(pool)])
    assert result.exit_code == 0, result.output
    assert "answer: [/red] 4 [bold]" in result.stdout


def test_prices_block_unknown_field_names_the_expected_ones(tmp_path):
    pool = write_pool(tmp_path / "pool.yaml", "http://127.0.0.1:9/v1",
                      prices={"models": {"qwen3-8b": {"input_per_m": 0.01}}})
    line = one_line_error(runner.invoke(app, ["show-config", str(pool)]), 2)
    assert "prices.models.qwen3-8b.input_per_m: unknown field" in line and "input, output, provider" in line


def test_a_model_added_in_the_prices_block_can_be_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    with ScriptedOpenAIServer(always(Reply(content="4", usage=(1000, 100)))) as server:
        pool = write_pool(tmp_path / "pool.yaml", server.base_url,
                          prices={"models": {"brand-new-model": {"input": 2.0, "output": 10.0}}})
        data = yaml.safe_load(pool.read_text())
        data["orchestrator"]["model"] = "brand-new-model"
        pool.write_text(yaml.safe_dump(data))
        result = runner.invoke(app, ["run", "2+2?", "--pool", str(pool), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cost_usd"] == pytest.approx((1000 * 2.0 + 100 * 10.0) / 1e6)


def test_run_prices_file_reprices_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  qwen3-8b: {input: 1.0, output: 1.0}\n")
    with ScriptedOpenAIServer(always(Reply(content="4", usage=(1000, 1000)))) as server:
        pool = write_pool(tmp_path / "pool.yaml", server.base_url)
        result = runner.invoke(app, ["run", "2+2?", "--pool", str(pool), "--json", "--prices", str(prices)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cost_usd"] == pytest.approx(2000 / 1e6)


def test_a_base_url_without_a_scheme_is_a_config_error_not_a_retry(tmp_path):
    pool = write_pool(tmp_path / "pool.yaml", "127.0.0.1:8000/v1")
    line = one_line_error(runner.invoke(app, ["run", "q", "--pool", str(pool)]), 2)
    assert "orchestrator.base_url" in line and "http://" in line


def test_a_failed_run_exits_1_and_json_stays_json(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    pool = write_pool(tmp_path / "pool.yaml", f"http://127.0.0.1:{unused_port()}/v1")
    result = runner.invoke(app, ["run", "q", "--pool", str(pool), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["termination"] == "error"  # stdout is the JSON alone


def test_json_config_errors_go_to_stderr_only(tmp_path):
    result = runner.invoke(app, ["run", "q", "--json", "--set", "limits.max_turns=0"])
    one_line_error(result, 2)
    assert result.stdout == ""


def test_budget_usd_caps_the_whole_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")
    with ScriptedOpenAIServer(tool_then_answer("calculator", {"expression": "2+2"}, answer="4")) as server:
        pool = write_pool(tmp_path / "pool.yaml", server.base_url)
        result = runner.invoke(app, ["run", "2+2?", "--pool", str(pool), "--json", "--budget-usd", "0.000001"])
        assert server.requests == []  # refused before anything was sent
    summary = json.loads(result.stdout)
    assert result.exit_code == 1 and summary["termination"] == "budget"
    assert summary["budget"] == {"limit_usd": 0.000001, "spent_usd": 0.0, "disputed_usd": 0.0}


def test_version_and_debug_through_the_installed_command(tmp_path):
    exe = [str(Path(sys.executable).parent / "orchestra")]  # the console script installed next to this python
    version = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("orchestra ")
    plain = subprocess.run([*exe, "show-config", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1
    debug = subprocess.run([*exe, "--debug", "show-config", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_a_bare_group_prints_its_help():
    for args in ([], ["tool"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Usage" in result.output and "Traceback" not in result.output
