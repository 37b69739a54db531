"""Local orchestrators in evaluations: a trained-checkpoint folder (orchestra.json names its prompt builder) and
`prompted:local`, including the tau solo-mode evaluation with trials (pass^k), on a tiny random model."""

import json

import pytest
from typer.testing import CliRunner

from orchestra.backends.base import Sampling
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.cli import app
from orchestra.envs.registry import load_suite
from orchestra.envs.routerbench.prompt import compact_prompt
from orchestra.evaluate import SpecContext, evaluate, resolve_orchestrator
from orchestra.evaluate.store import read_items
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-orchestrator")
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


async def test_checkpoint_folder_runs_with_the_prompt_builder_it_names(tiny_dir, tmp_path):
    from test_eval_baselines import ROWS, write_csv

    (tiny_dir / "orchestra.json").write_text(json.dumps({"prompt": "routerbench-compact", "model": "tiny-orch"}))
    suite = load_suite({"name": "routerbench", "data": str(write_csv(tmp_path / "toy.csv", ROWS))})
    env = suite.env
    orchestrator = resolve_orchestrator(str(tiny_dir), SpecContext(suite))
    assert orchestrator.build_prompt is compact_prompt and orchestrator.backend.model == "tiny-orch"
    settings = EpisodeSettings(limits=Limits(max_turns=2), sampling=Sampling(max_tokens=8))
    results = await evaluate(env, env.tasks()[:2], orchestrator, tmp_path / "run", config={"spec": "ckpt"},
                             settings=settings)
    assert results["n"] == 2 and results["orchestrator"]["prompt"] == "routerbench/compact"  # the legacy name reads
    items = read_items(tmp_path / "run" / "items.jsonl")
    first_turn = items[0]["trajectory"]["turns"][0]["completion"]
    assert first_turn["model"] == "tiny-orch" and first_turn["completion_ids"]  # the sampled ids are stored
    assert items[0]["trajectory"]["messages"][0]["content"].startswith("ask(model) shows")


def test_tau_solo_evaluation_with_a_local_model_and_two_trials(tiny_dir, tmp_path, data_dir):
    retail = data_dir / "tau2" / "retail"
    if not retail.is_dir():
        pytest.skip(f"no tau2 retail domain at {retail}")
    result = CliRunner().invoke(app, [
        "eval", "tau", "--data", str(retail), "--orchestrator", "prompted:local", "--local-model", str(tiny_dir),
        "--trials", "2", "--limit", "3", "--max-tokens", "16", "--max-turns", "2", "--out", str(tmp_path),
        "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((tmp_path / "prompted_local" / "results.json").read_text())
    assert results["n"] == 6 and results["n_tasks"] == 3 and results["trials"] == 2
    assert set(results["pass_hat_k"]) == {"1", "2"}
    assert results["pass_hat_k"]["2"] <= results["pass_hat_k"]["1"] == pytest.approx(results["pass_at_1"])
    assert results["config"]["env"]["env"] == "tau" and results["config"]["env"]["mode"] == "solo"
    items = read_items(tmp_path / "prompted_local" / "items.jsonl")
    assert sorted(i["id"] for i in items) == sorted(f"{t}#{k}" for t in {i["task_id"] for i in items} for k in (0, 1))


def test_a_run_moved_with_its_checkpoint_and_data_resumes_without_running_its_items_again(tiny_dir, tmp_path):
    """A copied run folder, checkpoint and data (new paths, same contents) is the same run: its items are kept under
    the new config hash. Different weights at the new path are another run, refused."""
    import shutil

    from test_eval_baselines import ROWS, write_csv

    def copy_checkpoint(to):
        shutil.copytree(tiny_dir, to)
        (to / "orchestra.json").write_text(json.dumps({"prompt": "routerbench/compact", "model": "tiny-orch"}))
        return to

    def run(data, checkpoint, out, limit):
        result = CliRunner().invoke(app, [
            "eval", "routerbench", "--data", str(data), "-o", str(checkpoint), "--limit", str(limit),
            "--max-tokens", "8", "--out", str(out), "--no-progress"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return out / "orchestrator"

    (tmp_path / "a").mkdir()
    first = run(write_csv(tmp_path / "a" / "toy.csv", ROWS), copy_checkpoint(tmp_path / "a" / "orchestrator"),
                tmp_path / "a" / "runs", 2)
    before = read_items(first / "items.jsonl")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = run(tmp_path / "b" / "toy.csv", tmp_path / "b" / "orchestrator", tmp_path / "b" / "runs", 4)
    after = read_items(moved / "items.jsonl")
    old_config = json.loads((first / "config.json").read_text())
    new_config = json.loads((moved / "config.json").read_text())
    assert old_config["config_hash"] != new_config["config_hash"]  # the paths did change the hash
    assert new_config["config"]["orchestrator"]["spec"] == str(tmp_path / "b" / "orchestrator")
    assert len(after) == 4 and {r["config_hash"] for r in after} == {new_config["config_hash"]}
    kept = {r["id"]: r["trajectory"] for r in after}
    assert all(kept[r["id"]] == r["trajectory"] for r in before)  # not run again: wall-clock latencies are the same

    shutil.copytree(tmp_path / "b", tmp_path / "c")
    (tmp_path / "c" / "orchestrator" / "orchestra.json").write_text(json.dumps(
        {"prompt": "routerbench/compact", "model": "tiny-orch", "trained_by": "another run"}))
    refused = CliRunner().invoke(app, [
        "eval", "routerbench", "--data", str(tmp_path / "c" / "toy.csv"), "-o", str(tmp_path / "c" / "orchestrator"),
        "--limit", "4", "--max-tokens", "8", "--out", str(tmp_path / "c" / "runs"), "--no-progress"])
    assert refused.exit_code == 2 and "orchestrator.folder_sha256" in refused.output
