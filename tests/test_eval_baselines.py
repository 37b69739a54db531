"""RouterBench baselines, run through the real episode loop on a small hand-made CSV whose answers are known."""

import csv
import json

import pytest

from orchestra.envs.registry import load_suite
from orchestra.envs.routerbench.baselines import KnnRouter, Outcomes, fit_cascades, simulate_cascade
from orchestra.envs.routerbench.data import load_rows
from orchestra.errors import ConfigError
from orchestra.evaluate import SpecContext, evaluate, resolve_orchestrator
from orchestra.evaluate.store import read_items

MODELS = ("m1", "m2", "m3")
COST = {"m1": 0.001, "m2": 0.01, "m3": 0.1}


def write_csv(path, rows):
    """rows: (sample_id, eval_name, question, {model: (correct or None, response)})."""
    header = ["", "sample_id", "prompt", "eval_name", *MODELS, *(f"{m}|model_response" for m in MODELS),
              *(f"{m}|total_cost" for m in MODELS), "oracle_model_to_route_to"]
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(header)
        for i, (sid, kind, question, recs) in enumerate(rows):
            outcome = ["" if recs.get(m, (None,))[0] is None else float(recs[m][0]) for m in MODELS]
            responses = [repr([recs[m][1]]) if m in recs else "" for m in MODELS]
            costs = [COST[m] if recs.get(m, (None,))[0] is not None else "" for m in MODELS]
            w.writerow([i, sid, repr([question]), kind, *outcome, *responses, *costs, ""])
    return path


ROWS = [
    # m1 and m2 agree (A, correct for both): a cascade stops after two asks.
    ("arc.1", "arc-challenge", "Q1 apple?", {"m1": (1, "A"), "m2": (1, "A"), "m3": (1, "A")}),
    # m1 and m2 disagree: the cascade escalates to m3 (correct); the oracle picks m2 (cheapest correct).
    ("arc.2", "arc-challenge", "Q2 banana?", {"m1": (0, "B"), "m2": (1, "C"), "m3": (1, "C")}),
    # nobody correct: the oracle answers with the cheapest available.
    ("arc.3", "arc-challenge", "Q3 cherry?", {"m1": (0, "A"), "m2": (0, "B"), "m3": (0, "D")}),
    # m3 missing on this row: always:m3 fails here at $0.
    ("arc.4", "arc-challenge", "Q4 apple pie?", {"m1": (1, "B"), "m2": (1, "B")}),
    # code row: the cascade answers with its first model.
    ("mbpp.1", "mbpp", "Write add(a, b).", {"m1": (0, "def add(a,b): return a-b"), "m2": (1, "def add(a,b): ..."),
                                            "m3": (1, "def add(a, b): return a + b")}),
]


@pytest.fixture
def suite(tmp_path):
    return load_suite({"name": "routerbench", "data": str(write_csv(tmp_path / "toy.csv", ROWS))})


@pytest.fixture
def env(suite):
    return suite.env


async def run(spec, suite, tmp_path, **kwargs):
    seed = kwargs.pop("seed", 0)
    if seed:
        suite = load_suite({"name": "routerbench", "data": suite.identity["data"], "seed": seed})
    orchestrator = resolve_orchestrator(spec, SpecContext(suite, seed=seed))
    out = tmp_path / spec.replace(":", "_").replace(",", "_")
    results = await evaluate(suite.env, suite.tasks, orchestrator, out, config={"spec": spec}, **kwargs)
    return results, {r["task_id"]: r for r in read_items(out / "items.jsonl")}


async def test_always_answers_with_its_model_and_fails_at_zero_cost_where_it_is_missing(suite, tmp_path):
    results, items = await run("always:m3", suite, tmp_path)
    assert items["arc.4"]["solved"] is False and items["arc.4"]["cost_usd"] == 0.0
    assert items["arc.4"]["termination"] == "final_message"
    assert results["accuracy"] == pytest.approx(3 / 5)
    assert results["cost_per_query_usd"] == pytest.approx(4 * 0.1 / 5)
    assert results["calls"]["share"] == {"m3": 0.8, "answer": 0.2}  # the failed call ran (tool_error), no target


async def test_oracle_answers_with_the_cheapest_correct_model(suite, tmp_path):
    _, items = await run("oracle", suite, tmp_path)
    assert {t: r["tool_counts"] for t, r in items.items()} == {
        "arc.1": {"m1": 1}, "arc.2": {"m2": 1}, "arc.3": {"m1": 1}, "arc.4": {"m1": 1}, "mbpp.1": {"m2": 1}}
    assert [items[t]["solved"] for t in sorted(items)] == [True, True, False, True, True]


async def test_cascade_stops_on_agreement_escalates_on_disagreement_and_answers_code_with_the_first(suite, tmp_path):
    _, items = await run("cascade:m1,m2,m3", suite, tmp_path)
    assert items["arc.1"]["cost_usd"] == pytest.approx(0.011)  # m1, m2 agree: answer m2 (already paid)
    assert items["arc.1"]["tool_counts"] == {"m1": 1, "m2": 2}
    assert items["arc.2"]["cost_usd"] == pytest.approx(0.111) and items["arc.2"]["solved"]  # escalated to m3
    assert items["arc.2"]["tool_counts"] == {"m1": 1, "m2": 1, "m3": 1}
    assert items["mbpp.1"]["tool_counts"] == {"m1": 1} and not items["mbpp.1"]["solved"]


async def test_random_is_seeded_per_task_and_picks_available_models(suite, tmp_path):
    _, first = await run("random", suite, tmp_path / "a", concurrency=1)
    _, again = await run("random", suite, tmp_path / "b", concurrency=5)
    assert {t: r["tool_counts"] for t, r in first.items()} == {t: r["tool_counts"] for t, r in again.items()}
    assert "m3" not in first["arc.4"]["tool_counts"]
    picks = set()
    for seed in range(8):
        _, items = await run("random", suite, tmp_path / f"s{seed}", seed=seed)
        picks |= {m for r in items.values() for m in r["tool_counts"]}
    assert picks == set(MODELS)


def test_cheapest_is_the_lowest_mean_cost_model(suite):
    orchestrator = resolve_orchestrator("cheapest", SpecContext(suite))
    assert orchestrator.details == {"model": "m1"}


def test_knn_routes_a_question_to_the_model_its_neighbours_got_right(tmp_path):
    rows = []
    for i in range(12):
        rows.append((f"a{i}", "arc-challenge", f"apple orchard fruit {i}?", {"m1": (1, "A"), "m2": (0, "B"),
                                                                           "m3": (1, "A")}))
        rows.append((f"b{i}", "arc-challenge", f"banana boat river {i}?", {"m1": (0, "A"), "m2": (1, "B"),
                                                                         "m3": (1, "B")}))
    train = load_rows(write_csv(tmp_path / "knn.csv", rows))
    router = KnnRouter.fit(train, MODELS, k=5, lam=1.0)
    assert router.choose("Task: arc-challenge\nwhich apple orchard fruit?") == "m1"
    assert router.choose("Task: arc-challenge\na banana boat on the river") == "m2"
    assert router.with_params(lam=0.0).choose("Task: arc-challenge\nbanana boat") in ("m2", "m3")


def test_cascade_search_respects_the_budget_and_beats_every_single_model_within_it(env):
    chosen = fit_cascades(list(env.rows), MODELS, budget_share=0.35)
    assert len(chosen["mbpp"]) == 1  # code rows answer with the first model: only single models are searched
    o = Outcomes.of([r for r in env.rows if r.task_type == "arc-challenge"], MODELS)
    accuracy, cost = simulate_cascade(o, [MODELS.index(m) for m in chosen["arc-challenge"]])
    reference = int(o.correct.mean(axis=0).argmax())
    cap = 0.35 * o.cost_usd[:, reference].mean()
    assert cost <= cap
    singles = [simulate_cascade(o, [j]) for j in range(len(MODELS))]
    assert all(accuracy >= a for a, c in singles if c <= cap)


def test_specs_fail_early_with_what_to_do(suite):
    ctx = SpecContext(suite)
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_orchestrator("always:nope", ctx)
    with pytest.raises(ConfigError, match="not a known form"):
        resolve_orchestrator("bogus", ctx)
    with pytest.raises(ConfigError, match="known models"):
        resolve_orchestrator("cascade:m1,zz", ctx)
    with pytest.raises(ConfigError, match="not a known form"):  # another environment has no such baseline
        resolve_orchestrator("oracle", SpecContext(load_suite({"name": "tau", "domain": "mock"})))


def test_checkpoint_folder_names_its_prompt_builder(tmp_path, suite):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "orchestra.json").write_text(json.dumps({"prompt": "no-such-prompt"}))
    with pytest.raises(ConfigError, match="routerbench/compact"):
        resolve_orchestrator(str(folder), SpecContext(suite))
