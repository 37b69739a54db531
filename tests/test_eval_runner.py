"""The evaluation runner: resume without paying twice, kill -9 (R1), refusing changed settings (R4), trials and
pass^k, preference scores, secrets kept out of the store."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestra import Outcome, Task
from orchestra.backends.base import Sampling
from orchestra.envs.base import Instance
from orchestra.errors import ConfigError
from orchestra.evaluate import Orchestrator, evaluate
from orchestra.evaluate.commands import avoid_preferences
from orchestra.evaluate.run import pass_hat_k
from orchestra.evaluate.store import read_items
from orchestra.preferences import Limits
from orchestra.rewards.preference import Features, preference_following_score
from orchestra.rollout.batch import EpisodeSettings
from orchestra.types import Completion

ENV_SOURCE = textwrap.dedent('''
    """A counting environment: each task's one tool appends its task id to a side file when it is paid."""
    import asyncio, os, sys
    from orchestra import Outcome, ScriptedBackend, Task, ToolOutput, tool
    from orchestra.envs.base import Instance
    from orchestra.evaluate import Orchestrator, evaluate

    class Counting:
        name = "counting"

        def __init__(self, side_file, n=40, delay_s=0.05):
            self.side_file, self.n, self.delay_s = side_file, n, delay_s

        def tasks(self, split=None):
            return [Task(id=f"t{i:02d}", prompt=f"task {i}", metadata={"i": i}) for i in range(self.n)]

        def start(self, task):
            i = task.metadata["i"]

            async def work(x: int) -> ToolOutput:
                """Do the paid work.

                Args:
                    x: anything
                """
                with open(self.side_file, "a") as f:
                    f.write(task.id + "\\n")
                    f.flush()
                    os.fsync(f.fileno())
                await asyncio.sleep(self.delay_s)
                return ToolOutput(f"result {i}", cost_usd=0.01 * (i % 3 + 1))

            async def grade(trajectory):
                return Outcome(i % 2 == 0, float(i % 2 == 0))

            return Instance(task, [tool(work)], grade)

    def script(messages):
        if any(m.role == "tool" for m in messages):
            return "done"
        return '<tool_call>{"name": "work", "arguments": {"x": 1}}</tool_call>'

    if __name__ == "__main__":
        out, side = sys.argv[1], sys.argv[2]
        env = Counting(side)
        orchestrator = Orchestrator(ScriptedBackend(script), spec="scripted")
        asyncio.run(evaluate(env, env.tasks(), orchestrator, out, config={"spec": "scripted"}, concurrency=4))
''')
CONCURRENCY = 4
N_TASKS = 40


def run_script(script, out, side, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen([sys.executable, str(script), str(out), str(side)], env=env, **kwargs)


def metrics(results):
    return {k: results[k] for k in ("n", "accuracy", "cost_per_query_usd", "total_cost_usd", "calls", "terminations")}


def test_kill_9_mid_run_then_resume_pays_only_in_flight_items_again(tmp_path):  # R1
    script = tmp_path / "counting_eval.py"
    script.write_text(ENV_SOURCE)
    out, side = tmp_path / "run", tmp_path / "paid.txt"
    kill_after = random.Random(7).randint(3, 15)
    proc = run_script(script, out, side, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    items = out / "items.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if items.exists() and items.read_bytes().count(b"\n") >= kill_after:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_items(items))
    assert kill_after <= done_before < N_TASKS

    resumed = run_script(script, out, side, stderr=subprocess.PIPE)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()[-2000:]
    records = read_items(items)
    ids = [json.loads(line)["id"] for line in items.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == N_TASKS  # complete, no duplicate ids
    paid = Counter(side.read_text().split())
    assert set(paid) == {r["task_id"] for r in records}
    assert sum(c - 1 for c in paid.values()) <= CONCURRENCY  # only the in-flight items were paid twice
    assert max(paid.values()) <= 2

    clean_out, clean_side = tmp_path / "clean", tmp_path / "paid-clean.txt"
    clean = run_script(script, clean_out, clean_side, stderr=subprocess.PIPE)
    assert clean.wait(timeout=120) == 0, clean.stderr.read().decode()[-2000:]
    assert Counter(clean_side.read_text().split()) == Counter({r["task_id"]: 1 for r in records})
    resumed_results = json.loads((out / "results.json").read_text())
    clean_results = json.loads((clean_out / "results.json").read_text())
    assert metrics(resumed_results) == metrics(clean_results)  # wall-clock latency aside


def load_counting(tmp_path, n=6):
    namespace = {"__name__": "counting_env"}
    exec(compile(ENV_SOURCE, "counting_env", "exec"), namespace)
    return namespace["Counting"](tmp_path / "paid.txt", n=n, delay_s=0.0), namespace["script"]


async def test_resume_runs_only_missing_items_and_a_changed_config_is_refused(tmp_path):  # R4
    from orchestra import ScriptedBackend

    env, script = load_counting(tmp_path)
    orchestrator = Orchestrator(ScriptedBackend(script), spec="scripted")
    first = await evaluate(env, env.tasks()[:3], orchestrator, tmp_path / "run", config={"spec": "scripted"})
    assert first["n"] == 3
    full = await evaluate(env, env.tasks(), orchestrator, tmp_path / "run", config={"spec": "scripted"})
    assert full["n"] == 6 and full["accuracy"] == 0.5
    assert Counter((tmp_path / "paid.txt").read_text().split()) == Counter({f"t{i:02d}": 1 for i in range(6)})
    assert full["cost_per_query_usd"] == pytest.approx(sum(0.01 * (i % 3 + 1) for i in range(6)) / 6)
    assert full["calls"]["share"] == {"work": 1.0}
    with pytest.raises(ConfigError, match=r"other inputs \(changed: x;"):
        await evaluate(env, env.tasks(), orchestrator, tmp_path / "run", config={"spec": "scripted", "x": 2})
    with pytest.raises(ConfigError, match=r"changed: settings.limits.max_turns;"):  # the runner hashes its settings
        await evaluate(env, env.tasks(), orchestrator, tmp_path / "run", config={"spec": "scripted"},
                       settings=EpisodeSettings(limits=Limits(max_turns=3)))
    again = await evaluate(env, env.tasks(), orchestrator, tmp_path / "run", config={"spec": "scripted", "x": 2},
                           force=True)
    assert again["n"] == 6 and {k: again["config"][k] for k in ("spec", "x")} == {"spec": "scripted", "x": 2}


class SeedEcho:
    """Answers with the sampling seed it was given (trial t samples with seed t)."""

    model = "seed-echo"

    def max_cost_usd(self, messages, tools, sampling):
        return 0.0

    async def complete(self, messages, tools, sampling: Sampling):
        return Completion(text=str(sampling.seed), model=self.model)


class TrialEnv:
    """Task i is solved in trial t when SOLVED[i][t]."""

    name = "trials"
    SOLVED = [[True, True, True], [True, False, True], [False, False, False]]

    def tasks(self, split=None):
        return [Task(id=f"q{i}", prompt="?", metadata={"i": i}) for i in range(3)]

    def start(self, task):
        async def grade(trajectory):
            ok = self.SOLVED[task.metadata["i"]][int(trajectory.final_answer)]
            return Outcome(ok, float(ok))

        return Instance(task, [], grade)


async def test_trials_sample_with_their_own_seed_and_give_pass_hat_k(tmp_path):
    env = TrialEnv()
    results = await evaluate(env, env.tasks(), Orchestrator(SeedEcho(), spec="echo"), tmp_path, config={}, trials=3)
    assert results["n"] == 9 and results["n_tasks"] == 3
    assert results["pass_at_1"] == pytest.approx(5 / 9)
    # task 0: 3/3; task 1: 2/3 -> pass^2 = C(2,2)/C(3,2) = 1/3, pass^3 = 0; task 2: 0.
    assert results["pass_hat_k"] == pytest.approx({"1": 5 / 9, "2": (1 + 1 / 3) / 3, "3": 1 / 3})


def test_pass_hat_k_is_the_share_of_tasks_solved_in_every_trial():
    records = [{"task_id": t, "solved": s} for t, s in [("a", 1), ("a", 1), ("b", 1), ("b", 0)]]
    assert pass_hat_k(records, 2) == {"1": 0.75, "2": 0.5}


async def test_preference_score_against_a_base_run_and_avoided_call_share(tmp_path):
    from test_eval_baselines import ROWS, write_csv  # the hand-made RouterBench rows

    from orchestra.envs.registry import load_suite
    from orchestra.evaluate import SpecContext, resolve_orchestrator

    suite = load_suite({"name": "routerbench", "data": str(write_csv(tmp_path / "toy.csv", ROWS))})
    env = suite.env
    prefs = avoid_preferences(["m3"], env.models)
    assert prefs.tool_weights == {"m1": 1.0, "m2": 1.0, "m3": 0.0} and "m3" in prefs.describe()

    async def run(spec, folder, preferences=None, base=None):
        o = resolve_orchestrator(spec, SpecContext(suite))
        return await evaluate(env, env.tasks(), o, tmp_path / folder, config={"spec": spec},
                              settings=EpisodeSettings(preferences=preferences), base_records=base)

    await run("always:m3", "base")
    base = read_items(tmp_path / "base" / "items.jsonl")
    avoided = await run("always:m3", "pref-m3", prefs, base)
    obeyed = await run("always:m1", "pref-m1", prefs, base)
    assert avoided["preference"]["dispreferred_call_share"] == 1.0
    assert obeyed["preference"]["dispreferred_call_share"] == 0.0
    item = {r["task_id"]: r for r in read_items(tmp_path / "pref-m1" / "items.jsonl")}["arc.1"]
    base_item = {r["task_id"]: r for r in base}["arc.1"]
    names = ("m1", "m2", "m3")
    expected = preference_following_score(
        Features(names, (1, 0, 0), True, item["cost_usd"], item["tool_latency_s"]),
        Features(names, (0, 0, 1), True, base_item["cost_usd"], base_item["tool_latency_s"]), prefs)
    assert expected > 0
    assert obeyed["preference"]["n_compared"] == 5
    per_item = obeyed["preference"]["score_sum"]
    assert per_item >= expected and obeyed["preference"]["score"] == pytest.approx(per_item / 5)
    assert obeyed["preference"]["score"] > avoided["preference"]["score"]


async def test_secrets_in_the_environment_never_reach_the_store(tmp_path, monkeypatch):
    from orchestra import ScriptedBackend

    secret = "sk-test-" + "Zq8" * 10
    monkeypatch.setenv("PROVIDER_API_KEY", secret)
    env, _ = load_counting(tmp_path, n=2)
    leaky = ScriptedBackend(lambda messages: f"my key is {secret}")
    await evaluate(env, env.tasks(), Orchestrator(leaky, spec="leaky"), tmp_path / "run", config={})
    text = (tmp_path / "run" / "items.jsonl").read_text()
    assert secret not in text and "***" in text
    assert len(read_items(tmp_path / "run" / "items.jsonl")) == 2
