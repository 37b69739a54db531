"""`orchestra eval` / `orchestra report` end to end on a hand-made RouterBench CSV: preferences, price overrides,
an orchestrator served over real HTTP (127.0.0.1), a pool's model prompted as orchestrator, and error exits."""

import json

import pytest
from test_eval_baselines import ROWS, write_csv
from typer.testing import CliRunner

from orchestra.backends.pricing import PriceTable
from orchestra.cli import app
from orchestra.evaluate.store import read_items
from orchestra.types import Usage
from tests.servers.scripted_openai import ScriptedOpenAIServer, tool_then_answer


@pytest.fixture
def toy(tmp_path):
    return write_csv(tmp_path / "toy.csv", ROWS)


def invoke(*args):
    argv = [str(a) for a in args]
    return CliRunner().invoke(app, [*argv, "--no-progress"] if argv[0] == "eval" else argv)


def test_prefer_avoid_with_a_base_run_prices_file_and_report(toy, tmp_path):
    base = invoke("eval", "routerbench", "--data", toy, "-o", "always:m3", "--out", tmp_path / "base")
    assert base.exit_code == 0, base.output
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  gpt-5-mini: {input: 0.5, output: 4.0}\n")
    run = invoke("eval", "routerbench", "--data", toy, "-o", "always:m1", "-o", "always:m3", "--prefer-avoid", "m3",
                 "--base-run", tmp_path / "base" / "always_m3", "--prices", prices, "--out", tmp_path / "pref")
    assert run.exit_code == 0, run.output
    obeyed = json.loads((tmp_path / "pref" / "always_m1" / "results.json").read_text())
    assert obeyed["config"]["settings"]["preferences"]["tool_weights"] == {"m1": 1.0, "m2": 1.0, "m3": 0.0}
    assert obeyed["config"]["prices"]["version"].endswith("+overrides")
    assert obeyed["preference"]["dispreferred_call_share"] == 0.0 and obeyed["preference"]["n_compared"] == 5
    items = read_items(tmp_path / "pref" / "always_m1" / "items.jsonl")
    assert "do not use m3" in items[0]["trajectory"]["messages"][1]["content"]  # the instruction reached the prompt
    report = invoke("report", tmp_path / "base", tmp_path / "pref", "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.count("## routerbench") == 2 and "share of calls to avoided tools" in md
    score = f"{obeyed['preference']['score']:.3f}"
    assert f"| always:m1 | 0.000 | {score} | 5 |" in md

    # Without --base-run, the report pairs a preference run with the same spec's run without preferences.
    again = invoke("eval", "routerbench", "--data", toy, "-o", "always:m1", "--prefer-avoid", "m3",
                   "--out", tmp_path / "pref2")
    plain = invoke("eval", "routerbench", "--data", toy, "-o", "always:m1", "--out", tmp_path / "plain")
    assert again.exit_code == plain.exit_code == 0
    assert "score" not in json.loads((tmp_path / "pref2" / "always_m1" / "results.json").read_text())["preference"]
    report = invoke("report", tmp_path / "plain", tmp_path / "pref2", "--out", tmp_path / "report2")
    assert report.exit_code == 0, report.output
    # against itself: per solved item m1 count 1/1 plus outcome 1, times P = 2; m1 solves 2 of 5 items
    assert "| always:m1 | 0.000 | 0.800 | 5 |" in (tmp_path / "report2" / "report.md").read_text()


def test_served_orchestrator_pays_its_own_tokens_and_its_calls(toy, tmp_path):
    handler = tool_then_answer("answer", {"model": "m2"}, usage=(50, 10))
    with ScriptedOpenAIServer(handler) as server:
        run = invoke("eval", "routerbench", "--data", toy, "-o", server.base_url, "--endpoint-model", "gpt-5-mini",
                     "--out", tmp_path)
        assert run.exit_code == 0, run.output + repr(run.exception)
        assert len(server.requests) == 5
    results = json.loads(next(tmp_path.glob("*/results.json")).read_text())
    own = PriceTable.default().cost_usd("gpt-5-mini", Usage(50, 10))
    assert results["cost_per_query_usd"] == pytest.approx(own + 0.01)
    assert results["accuracy"] == pytest.approx(4 / 5)
    assert results["calls"]["share"] == {"m2": 1.0}


def test_a_pool_model_prompted_as_orchestrator(toy, tmp_path):
    handler = tool_then_answer("answer", {"model": "m1"}, hermes=True)
    with ScriptedOpenAIServer(handler) as server:
        pool = tmp_path / "pool.yaml"
        pool.write_text(f"tools:\n  - name: mini\n    expert: {{kind: openai, model: gpt-5-mini, "
                        f"base_url: '{server.base_url}'}}\n")
        run = invoke("eval", "routerbench", "--data", toy, "-o", "prompted:gpt-5-mini", "--pool", pool,
                     "--out", tmp_path / "runs", "--limit", "2")
        assert run.exit_code == 0, run.output + repr(run.exception)
        sent = server.requests[0].body
    assert sent["model"] == "gpt-5-mini" and any(t["function"]["name"] == "ask" for t in sent["tools"])
    results = json.loads((tmp_path / "runs" / "prompted_gpt-5-mini" / "results.json").read_text())
    assert results["n"] == 2 and results["calls"]["share"] == {"m1": 1.0}
    # R5: the same pool path with other contents (another expert timeout) is another run; resuming it is refused
    pool.write_text(pool.read_text().replace("}\n", ", timeout_s: 9}\n"))
    again = invoke("eval", "routerbench", "--data", toy, "-o", "prompted:gpt-5-mini", "--pool", pool,
                   "--out", tmp_path / "runs", "--limit", "2")
    assert again.exit_code == 2 and "changed: pool.sha256" in again.output, again.output


def test_mistakes_exit_2_with_the_fix(toy, tmp_path):
    bad = invoke("eval", "routerbench", "--data", toy, "-o", "nonsense", "--out", tmp_path)
    assert bad.exit_code == 2 and "not a known form" in bad.output
    missing = invoke("eval", "routerbench", "--data", toy, "-o", "prompted:nope", "--out", tmp_path)
    assert missing.exit_code == 2 and "has no model 'nope'" in missing.output
    part = invoke("eval", "routerbench", "--data", toy, "-o", "oracle", "--part", "dev", "--out", tmp_path)
    assert part.exit_code == 2 and "--dev-fraction" in part.output
    assert invoke("eval", "nowhere", "-o", "oracle").exit_code == 2
    prefs = tmp_path / "prefs.yaml"
    prefs.write_text("tool_weights: {m1: 1.0}\ncolour: blue\n")
    wrong = invoke("eval", "routerbench", "--data", toy, "-o", "oracle", "--preferences", prefs, "--out", tmp_path)
    assert wrong.exit_code == 2 and "keys among" in wrong.output


def test_a_run_wide_budget_caps_the_whole_evaluation(toy, tmp_path):
    handler = tool_then_answer("answer", {"model": "m2"}, usage=(50, 10))
    with ScriptedOpenAIServer(handler) as server:
        run = invoke("eval", "routerbench", "--data", toy, "-o", server.base_url, "--endpoint-model", "gpt-5-mini",
                     "--run-budget-usd", "0.025", "--concurrency", "5", "--out", tmp_path)
        assert run.exit_code == 0, run.output + repr(run.exception)
    results = json.loads(next(tmp_path.glob("*/results.json")).read_text())
    assert results["n"] == 5 and results["total_cost_usd"] <= 0.025
    assert results["calls"]["count"].get("m2", 0) <= 2  # each answer costs $0.01 plus the orchestrator's tokens
    assert "budget" in results["terminations"]  # the rest stopped at the shared cap
    bad = invoke("eval", "routerbench", "--data", toy, "-o", "oracle", "--run-budget-usd", "-1", "--out", tmp_path)
    assert bad.exit_code == 2 and "run_budget_usd" in bad.output


def test_prices_reprice_recorded_answers_and_bad_prices_are_one_line(toy, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("recorded:\n  m3: {factor: 0.5}\n  m1: {per_call_usd: 0.004}\n")
    run = invoke("eval", "routerbench", "--data", toy, "-o", "always:m3", "-o", "always:m1", "--prices", prices,
                 "--out", tmp_path / "runs")
    assert run.exit_code == 0, run.output
    m3 = json.loads((tmp_path / "runs" / "always_m3" / "results.json").read_text())
    m1 = json.loads((tmp_path / "runs" / "always_m1" / "results.json").read_text())
    assert m3["cost_per_query_usd"] == pytest.approx(4 * 0.1 * 0.5 / 5)  # recorded $0.1, halved; one row lacks m3
    assert m1["cost_per_query_usd"] == pytest.approx(0.004)
    item = read_items(tmp_path / "runs" / "always_m3" / "items.jsonl")[0]
    assert item["metadata"]["prices_per_1k"]["m3"] == pytest.approx(50.0)  # the prompt shows the new price
    assert "m3" in m3["config"]["env"]["recorded_prices"]  # part of the run's identity
    for body, message in [("recorded:\n  zz: {factor: 2}\n", "unknown models ['zz']"),
                          ("recorded:\n  m1: {factor: 0}\n", "factor: Input should be greater than 0"),
                          ("recorded:\n  m1: {per_call_usd: -1}\n", "per_call_usd: Input should be greater than or"),
                          ("recorded:\n  m1: {factor: 1, per_call_usd: 1}\n", "exactly one of")]:
        prices.write_text(body)
        bad = invoke("eval", "routerbench", "--data", toy, "-o", "oracle", "--prices", prices, "--out", tmp_path)
        assert bad.exit_code == 2 and message in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output


def test_checkpoints_with_the_same_folder_name_get_their_own_run_folders():
    from orchestra.evaluate.commands import run_names

    names = run_names(["runs/a/sft/orchestrator", "runs/b/sft/orchestrator/", "cascade", "runs/c/orchestrator",
                       "http://127.0.0.1:8000/v1"])
    assert names == {"runs/a/sft/orchestrator": "a_sft_orchestrator", "runs/b/sft/orchestrator/": "b_sft_orchestrator",
                     "cascade": "cascade", "runs/c/orchestrator": "c_orchestrator",
                     "http://127.0.0.1:8000/v1": "http_127.0.0.1_8000_v1"}
    assert len(set(names.values())) == len(names)
    assert run_names(["runs/x/orchestrator", "always:gpt-4"]) == {"runs/x/orchestrator": "orchestrator",
                                                                  "always:gpt-4": "always_gpt-4"}
