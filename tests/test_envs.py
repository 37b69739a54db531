"""The environment contract and registry: every environment loads by name into a Suite; bad names, fields, folders
and mixtures fail in one line before any model is loaded; τ² golden demonstrations, teacher demonstrations and
training on a mixture of τ² domains; run identity over data contents."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestra.backends.local import LocalBackend
from orchestra.backends.scripted import ScriptedBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.config import load_config
from orchestra.envs.base import Suite
from orchestra.envs.registry import load_suite, names, parse_config
from orchestra.errors import ConfigError
from orchestra.evaluate import SpecContext, evaluate, resolve_orchestrator
from orchestra.toolcalls import render_hermes
from orchestra.train.config import SFTConfig
from orchestra.train.export import read_meta
from orchestra.train.mixture import TrainingEnv, shares, teacher_demonstrations
from orchestra.train.sft import train_sft


def orchestra_cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("orchestra")  # the installed console script, as a user runs it
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def mock_folder(data_dir, tmp_path) -> Path:
    folder = tmp_path / "mock"
    shutil.copytree(data_dir / "tau2" / "mock", folder)
    return folder


@pytest.mark.parametrize("config", [{"name": "routerbench", "dev_fraction": 0.1}, {"name": "tau", "domain": "mock"},
                                    {"name": "qa", "format": "hle", "data": "HLE"}])
def test_every_environment_loads_by_name_into_a_suite(config, data_dir):
    if config.get("data") == "HLE":
        config = {**config, "data": str(data_dir / "hle" / "hle_20.jsonl")}
    suite = load_suite(config)
    assert isinstance(suite, Suite) and config["name"] in names()
    assert suite.tasks and suite.identity["data_sha256"] and suite.prompt_name
    messages = suite.prompt(suite.tasks[0], [t.spec for t in suite.env.start(suite.tasks[0]).tools], None)
    assert messages[0].role == "system" and messages[-1].role == "user"


def test_bad_names_and_fields_fail_in_one_line_naming_them():
    with pytest.raises(ConfigError, match=r"'tua': unknown \(did you mean 'tau'\?\)"):
        load_suite({"name": "tua"})
    with pytest.raises(ConfigError, match=r"envs\.1: .*colour: unknown field"):
        parse_config({"name": "tau", "colour": "blue"}, where="envs.1")
    with pytest.raises(ConfigError, match="envs: .*weights sum to 0"):
        load_config(None, SFTConfig, default={"envs": [{"name": "tau", "weight": 0},
                                                       {"name": "routerbench", "weight": 0}]})
    assert shares(10, [1, 1, 1]) == [4, 3, 3] and sum(shares(7, [0.2, 0.5, 0.3])) == 7


def test_cli_bad_inputs_fail_before_any_model_loads(mock_folder, tmp_path):
    (mock_folder / "tasks.json").unlink()
    cases = {
        "unknown environment": (["train", "sft", "--set", "envs=[{name: nowhere}]"], "environment 'nowhere'"),
        "folder without tasks": (["train", "sft", "--set", f"envs=[{{name: tau, path: '{mock_folder}'}}]"],
                                 "no tasks.json"),
        "weights": (["train", "sft", "--set", "envs=[{name: tau, domain: mock, weight: 0}]"], "weights sum"),
        "eval name": (["eval", "tua", "-o", "x"], "did you mean 'tau'"),
    }
    with socket.socket() as probe:  # a port nothing listens on: the teacher endpoint is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    teacher = (f"demonstrations={{source: teacher, teacher: {{kind: openai, model: gpt-5-mini, "
               f"base_url: 'http://127.0.0.1:{port}/v1'}}}}")
    cases["teacher down"] = (["train", "sft", "--set", "envs=[{name: tau, domain: mock}]", "--set", teacher],
                             "is not reachable")
    for what, (args, message) in cases.items():
        result = orchestra_cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (what, result.stderr)
        assert len(lines) == 1 and message in lines[0], (what, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout


def test_tau_golden_demonstrations_replay_the_golden_calls_and_solve(data_dir):
    suite = load_suite({"name": "tau", "domain": "mock"})
    examples = suite.training_examples(0)
    demos = asyncio.run(suite.demonstrate(examples))
    assert demos and len(demos) <= len(examples)
    for example, trajectory in demos:
        spec = suite.env.spec(example.task)
        golden = [(a.name, dict(a.arguments)) for a in spec.actions if a.requestor == "assistant"]
        assert [(c.name, dict(c.arguments)) for c in trajectory.calls] == golden
        assert trajectory.final_answer and trajectory.termination == "final_message"
        assert all(info in trajectory.final_answer for info in spec.communicate_info)
        for turn in trajectory.turns:  # one call per turn, as a small model is trained to act
            assert len(turn.completion.tool_calls) <= 1


def odd(task_id: str, suite: Suite) -> bool:
    return [t.id for t in suite.tasks].index(task_id) % 2 == 1


class SolvesOddTasks:
    """A scripted teacher (an InstancePolicy): replays the golden calls on odd-numbered tasks, answers nothing on
    the others; only the solved episodes may become demonstrations."""

    def __init__(self, suite: Suite):
        self.suite = suite

    @property
    def model(self) -> str:
        return "odd-teacher"

    def for_instance(self, instance):
        spec = self.suite.env.spec(instance.task)
        calls = [a for a in spec.actions if a.requestor == "assistant"]
        good = odd(instance.task.id, self.suite)

        def act(messages):
            turn = sum(m.role == "assistant" for m in messages)
            if good and turn < len(calls):
                return render_hermes(calls[turn].name, dict(calls[turn].arguments))
            return "Done. " + " ".join(spec.communicate_info) if good else "I cannot help."

        return ScriptedBackend(act, model=self.model)


def test_teacher_demonstrations_keep_only_solved_episodes(data_dir):
    suite = load_suite({"name": "tau", "domain": "mock"})
    examples = suite.training_examples(0)
    demos = asyncio.run(teacher_demonstrations(TrainingEnv(suite, 1.0), examples, SolvesOddTasks(suite)))
    kept = {e.task.id for e, _ in demos}
    golden = {e.task.id for e, _ in asyncio.run(suite.demonstrate(examples))}
    assert {t for t in golden if odd(t, suite)} <= kept  # the good episodes solve and are kept
    assert any(not odd(t, suite) for t in {e.task.id for e in examples} - kept)  # failed ones are not
    everything = asyncio.run(teacher_demonstrations(TrainingEnv(suite, 1.0), examples, SolvesOddTasks(suite),
                                                    keep_unsolved=True))
    assert len(everything) == len(examples) > len(demos)


@pytest.fixture(scope="module")
def tiny_backend():
    tok = tiny_tokenizer()
    return LocalBackend(tiny_model(tok, seed=0, hidden_size=64, num_layers=2), tok, render_tools=False, seed=0)


def test_sft_on_a_mixture_of_tau_domains_records_how_to_prompt_it(tmp_path, tiny_backend, data_dir):
    envs = [{"name": "tau", "domain": "mock", "weight": 3}, {"name": "tau", "domain": "mock", "max_actions": 1}]
    config = SFTConfig.model_validate({"envs": envs, "examples": 8, "examples_per_step": 4, "lora": {"rank": 0},
                                       "output_dir": str(tmp_path / "sft"), "checkpoint": {"every_steps": 100}})
    losses: list[float] = []
    result = train_sft(config, backend=tiny_backend, on_step=lambda s, t, v: losses.append(v["loss"]))
    assert result.demonstrations == 8 and result.steps == 2 and all(x == x for x in losses)
    meta = read_meta(result.output_dir)
    assert (meta.prompt, meta.observation, meta.trained_by) == ("env", "env", "sft")  # a mixture: each env's own
    single = SFTConfig.model_validate({**config.model_dump(), "envs": envs[:1], "output_dir": str(tmp_path / "one")})
    meta = read_meta(train_sft(single, backend=tiny_backend).output_dir)
    assert (meta.prompt, meta.observation) == ("tau/compact", "capped:1200")
    suite = load_suite({"name": "tau", "domain": "mock"})
    resolved = resolve_orchestrator(str(tmp_path / "one" / "orchestrator"), SpecContext(suite))
    assert resolved.build_prompt is suite.prompt and resolved.render_observation is suite.observation


async def test_resume_is_refused_naming_the_input_whose_contents_changed(mock_folder, tmp_path):
    suite = load_suite({"name": "tau", "path": str(mock_folder), "max_tasks": 2})
    silent = ScriptedBackend(lambda messages: "done")
    from orchestra.evaluate.spec import Orchestrator

    run = tmp_path / "run"
    await evaluate(suite.env, suite.tasks, Orchestrator(silent, spec="s"), run,
                   config={"env": dict(suite.identity)})
    db = mock_folder / "db.json"
    data = json.loads(db.read_text())
    db.write_text(json.dumps(data, indent=1) + "\n")  # same path, other bytes
    changed = load_suite({"name": "tau", "path": str(mock_folder), "max_tasks": 2})
    with pytest.raises(ConfigError, match=r"changed: env\.data_sha256"):
        await evaluate(changed.env, changed.tasks, Orchestrator(silent, spec="s"), run,
                       config={"env": dict(changed.identity)})


def test_bad_routerbench_cells_and_missing_data_are_one_line(tmp_path):
    from test_eval_baselines import ROWS, write_csv

    path = write_csv(tmp_path / "toy.csv", ROWS)
    path.write_text(path.read_text().replace(",1.0,", ",yes,", 1))
    with pytest.raises(ConfigError, match=r"toy.csv, sample 'arc.1': model 'm1' has outcome 'yes'"):
        load_suite({"name": "routerbench", "data": str(path)})
    result = orchestra_cli("eval", "routerbench", "--data", str(tmp_path / "none"), "-o", "oracle")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: routerbench data: {tmp_path / 'none'} does not exist"]


def test_training_configs_take_trl_names_and_suggest_the_closest_field():
    from orchestra.train.config import GRPOConfig

    config = load_config(None, GRPOConfig, default={"max_steps": 3, "num_generations": 4, "beta": 0.01,
                                                    "lora": {"r": 8, "lora_alpha": 16}, "trl": {"max_grad_norm": 0.5}})
    assert (config.steps, config.group_size, config.kl_coef, config.lora.rank, config.lora.alpha) == (3, 4, 0.01, 8, 16)
    with pytest.raises(ConfigError, match=r"group_sise: unknown field \(did you mean 'group_size'\?\)"):
        load_config(None, GRPOConfig, default={"group_sise": 4})
    with pytest.raises(ConfigError, match="name the same GRPO setting"):
        load_config(None, GRPOConfig, default={"max_steps": 3, "steps": 4})
