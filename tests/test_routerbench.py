"""RouterBench replay: "answer with m" reproduces m's recorded accuracy and mean cost exactly."""

import csv
import json
import statistics
import sys

import pytest

from orchestra import ScriptedBackend, Toolbox, run_episode
from orchestra.envs.routerbench import data
from orchestra.envs.routerbench import env as rb
from tests.envs import routerbench_env


def answer(model):
    return f'<tool_call>{{"name": "answer", "arguments": {{"model": "{model}"}}}}</tool_call>'


def ask(model):
    return f'<tool_call>{{"name": "ask", "arguments": {{"model": "{model}"}}}}</tool_call>'


@pytest.fixture(scope="module")
def winogrande(data_dir):
    return data_dir / "routerbench" / "winograde_train.csv"


def recorded_means(path, column):
    """Accuracy and mean cost of one model, computed straight from the CSV (missing outcomes excluded)."""
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r[column] != ""]
    return (statistics.fmean(float(r[column]) for r in rows),
            statistics.fmean(float(r[f"{column}|total_cost"]) for r in rows), len(rows))


async def run_policy(env, script):
    solved, costs = [], []
    for task in env.tasks():
        instance = env.start(task)
        tr = await run_episode(task, ScriptedBackend(list(script)), Toolbox.of(instance.tools))
        outcome = await instance.grade(tr)
        solved.append(outcome.solved)
        costs.append(tr.cost_usd)
    return statistics.fmean(solved), statistics.fmean(costs), len(solved)


@pytest.mark.parametrize(("column", "alias"), [("gpt-4-1106-preview", "gpt-4"), ("zero-one-ai/Yi-34B-Chat", "yi-34b"),
                                               ("mistralai/mistral-7b-chat", "mistral-7b")])
async def test_answer_with_model_reproduces_recorded_accuracy_and_cost(winogrande, column, alias):
    env = routerbench_env(winogrande)
    accuracy, cost, n = await run_policy(env, [answer(alias)])
    exp_accuracy, exp_cost, exp_n = recorded_means(winogrande, column)
    assert n == exp_n
    assert accuracy == pytest.approx(exp_accuracy, abs=1e-12)
    assert cost == pytest.approx(exp_cost, rel=1e-12)


async def test_missing_outcomes_make_a_model_unavailable_not_correct(data_dir):
    path = data_dir / "routerbench" / "arc_challenge_train.csv"
    env = routerbench_env(path)
    missing = [r for r in env.rows if "gpt-3.5" not in r.records]
    assert missing, "the ARC split has rows with a missing gpt-3.5 outcome"
    row = missing[0]
    task = env.task(row)
    instance = env.start(task)
    tr = await run_episode(task, ScriptedBackend([answer("gpt-3.5"), "no answer"]), Toolbox.of(instance.tools))
    assert tr.turns[0].observations[0].status == "tool_error"
    assert "unavailable" in tr.turns[0].observations[0].content
    assert not (await instance.grade(tr)).solved
    assert tr.cost_usd == 0.0


async def test_ask_then_answer_pays_once_and_counts_per_model(winogrande):
    env = routerbench_env(winogrande)
    task = env.tasks()[0]
    row = env.row(task.id)
    instance = env.start(task)
    tr = await run_episode(task, ScriptedBackend([ask("yi-34b") + ask("mixtral"), answer("yi-34b")]),
                           Toolbox.of(instance.tools))
    assert tr.cost_usd == pytest.approx(row.records["yi-34b"].cost_usd + row.records["mixtral"].cost_usd)
    assert tr.tool_counts() == {"yi-34b": 2, "mixtral": 1}
    assert tr.turns[0].observations[0].content in ("A", "B")
    assert (await instance.grade(tr)).solved == row.records["yi-34b"].correct


def test_split_is_stratified_seeded_and_disjoint(data_dir):
    rows = data.load_rows(data_dir / "routerbench")
    train, dev = data.split_rows(rows, 0.2, seed=0)
    assert {r.id for r in train}.isdisjoint({r.id for r in dev})
    assert len(train) + len(dev) == len(rows)
    for task_type in {r.task_type for r in rows}:
        share = sum(r.task_type == task_type for r in dev) / sum(r.task_type == task_type for r in rows)
        assert share == pytest.approx(0.2, abs=0.01)
    assert [r.id for r in data.split_rows(rows, 0.2, seed=0)[1]] == [r.id for r in dev]


def test_descriptions_use_training_statistics_only(data_dir):
    env = routerbench_env(data_dir / "routerbench", dev_fraction=0.5, seed=1, part="dev")
    train_env = routerbench_env(data_dir / "routerbench", dev_fraction=0.5, seed=1, part="train")
    assert env.stats == train_env.stats
    assert {r.id for r in env.rows}.isdisjoint({r.id for r in train_env.rows})


def test_any_csv_of_the_format_loads(tmp_path):
    path = tmp_path / "mini.csv"
    with path.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["", "sample_id", "prompt", "eval_name", "m1", "m2", "m1|model_response", "m2|model_response",
                    "m1|total_cost", "m2|total_cost", "oracle_model_to_route_to"])
        w.writerow([0, "q.1", json.dumps(["Which?\nA) x\nB) y\nAnswer:"]), "toy", 1.0, 0.0, "['A']", "['B']",
                    0.001, 0.0001, "m1"])
    env = routerbench_env(path)
    assert env.models == ("m1", "m2")
    assert env.rows[0].gold_choice == "A"
    assert env.rows[0].question.startswith("Which?")


async def test_parallel_asks_state_agreement_in_call_order(winogrande):
    env = routerbench_env(winogrande)
    letters = {"agree": None, "disagree": None}
    for row in env.rows:
        a, b, c = (rb.extract_choice(row.records[m].response) for m in ("yi-34b", "mixtral", "gpt-4"))
        if a and b and c and a == b == c and letters["agree"] is None:
            letters["agree"] = row
        if a and b and c and a != b and c == a and letters["disagree"] is None:
            letters["disagree"] = row
    assert all(letters.values()), "winogrande has rows where the models agree and where they disagree"

    row = letters["agree"]
    instance = env.start(env.task(row))
    tr = await run_episode(env.task(row), ScriptedBackend([ask("yi-34b") + ask("mixtral"), answer("mixtral")]),
                           Toolbox.of(instance.tools))
    letter = rb.extract_choice(row.records["yi-34b"].response)
    assert [o.content for o in tr.turns[0].observations] == [letter, f"{letter} (agrees with yi-34b)"]

    row = letters["disagree"]
    instance = env.start(env.task(row))
    a, b, c = (rb.extract_choice(row.records[m].response) for m in ("yi-34b", "mixtral", "gpt-4"))
    tr = await run_episode(env.task(row), ScriptedBackend([ask("yi-34b") + ask("mixtral") + ask("gpt-4"),
                                                           answer("gpt-4")]), Toolbox.of(instance.tools))
    assert [o.content for o in tr.turns[0].observations] == [
        a, f"{b} (disagrees with yi-34b: {a})", f"{c} (disagrees with mixtral: {b})"]


def test_shown_letter_reads_back_what_ask_shows():
    for letter, earlier in [("B", {}), ("A", {"yi-34b": "A"}), ("C", {"yi-34b": "A", "mixtral": None})]:
        shown = f"{letter} ({rb.compare_answers(letter, earlier)})" if earlier else letter
        assert rb.shown_letter(shown) == letter
    assert rb.shown_letter("def add(a, b): return a + b") is None
    assert rb.shown_letter("A chart of the results") is None  # a response without a letter is shown as text
