"""The `teacher` baseline: the demonstrations' policy run as an evaluation, through the CLI on real RouterBench rows.

It must make the demonstrations' calls (so it measures what a perfect student would score), plan introduced models
from their introductions, and refuse unknown models in one line."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.envs.registry import load_suite
from orchestra.envs.routerbench.demonstrations import Offer, consult_backend, fit_consult_policy
from orchestra.envs.routerbench.training import DEMO_SETTINGS
from orchestra.rollout.batch import run_task
from tests.envs import routerbench_head

SEEN = ["claude-1", "claude-2", "gpt-3.5", "gpt-4", "llama-70b", "mistral-7b", "mixtral", "wizardlm-13b"]
UNSEEN = ["yi-34b", "claude-instant", "codellama-34b"]


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory):
    return routerbench_head(data_dir, tmp_path_factory.mktemp("routerbench"), 200)


def evaluate(data, out, specs, *env_set):
    args = ["eval", "routerbench", "--data", str(data), "--dev-fraction", "0.25", "--seed", "0", "--out", str(out),
            "--no-progress"]
    for spec in specs:
        args += ["-o", spec]
    for item in env_set:
        args += ["--env-set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    from orchestra.evaluate.commands import run_names

    folders = run_names(specs)
    lines = {spec: (out / folders[spec] / "items.jsonl").read_text().splitlines() for spec in specs}
    return {spec: {r["task_id"]: r for r in map(json.loads, lines[spec])} for spec in specs}


def demonstrated(data, config):
    """Per dev task: (solved, cost, models called in order) of the demonstrations' policy run by the episode loop."""
    suite = load_suite({"name": "routerbench", "data": str(data), "dev_fraction": 0.25, "seed": 0, **config},
                       part="dev")
    rows, out = suite.train_env.rows, {}
    for task in suite.tasks:
        offer = Offer.of(task.metadata, suite.env.models)
        policy = fit_consult_policy(rows, allowed=offer.offered, price_factors=offer.factors, stand_ins=offer.stand_ins)
        result = asyncio.run(run_task(suite.env, task, consult_backend(policy, offer.names), DEMO_SETTINGS))
        calls = [c.arguments["model"] for t in result.trajectory.turns for c in t.completion.tool_calls]
        out[task.id] = (result.outcome.solved, result.trajectory.cost_usd, sorted(calls))
    return out


def called(item):
    return sorted(c["arguments"]["model"] for t in item["trajectory"]["turns"] for c in t["completion"]["tool_calls"])


def test_the_teacher_baseline_makes_the_demonstrations_calls_and_plans_introduced_models_by_introduction(
        data, tmp_path):
    plain = evaluate(data, tmp_path / "plain", ["teacher", "teacher:" + ",".join(SEEN)])
    expected = demonstrated(data, {})
    assert len(plain["teacher"]) == len(expected) >= 40
    for task_id, (solved, cost, calls) in expected.items():
        item = plain["teacher"][task_id]
        assert (item["outcome"]["solved"], called(item)) == (solved, calls), task_id
        assert item["cost_usd"] == pytest.approx(cost, rel=1e-12)
    assert any(len(calls) == 3 for _, _, calls in expected.values())  # consults with both answers compared
    only_seen = {m for item in plain["teacher:" + ",".join(SEEN)].values() for m in called(item)}
    assert only_seen <= set(SEEN)

    new_models = "new_models=" + json.dumps(UNSEEN)
    introduced = evaluate(data, tmp_path / "new", ["teacher"], new_models)["teacher"]
    expected = demonstrated(data, {"new_models": UNSEEN})
    handles = set()
    for task_id, (solved, cost, calls) in expected.items():
        item = introduced[task_id]
        assert (item["outcome"]["solved"], called(item)) == (solved, calls), task_id
        assert item["cost_usd"] == pytest.approx(cost, rel=1e-12)
        handles |= {m for m in calls if m.startswith("new")}
        assert not set(calls) & set(UNSEEN)  # an introduced model answers to its handle alone
    assert handles  # the introductions make some introduced model worth calling


def test_a_teacher_over_unknown_models_is_refused_in_one_line(data, tmp_path):
    result = CliRunner().invoke(app, ["eval", "routerbench", "--data", str(data), "--dev-fraction", "0.25",
                                      "--out", str(tmp_path), "--no-progress", "-o", "teacher:gpt-4,gpt-5"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "teacher:gpt-4,gpt-5: unknown models ['gpt-5']" in result.output
