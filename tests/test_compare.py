"""`orchestra compare`: paired comparison of runs on the same items, on runs the real evaluator wrote from the shared
RouterBench data; the statistics checked against values worked out by hand."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.errors import ConfigError
from orchestra.evaluate.paired import mcnemar_exact_p, paired
from orchestra.evaluate.store import read_items


def invoke(*args):
    argv = [str(a) for a in args]
    return CliRunner().invoke(app, [*argv, "--no-progress"] if argv[0] == "eval" else argv)


@pytest.mark.parametrize(("wins", "losses", "p"), [
    (0, 0, 1.0),
    (5, 5, 1.0),
    (0, 6, 2 / 64),  # both tails of binomial(6, 1/2) at 0
    (10, 1, 2 * (1 + 11) / 2048),
    (11, 6, 2 * sum([1, 17, 136, 680, 2380, 6188, 12376]) / 2 ** 17),
])
def test_mcnemar_exact_p_matches_the_binomial_tails(wins, losses, p):
    assert mcnemar_exact_p(wins, losses) == pytest.approx(p)
    assert mcnemar_exact_p(losses, wins) == pytest.approx(p)  # two-sided: symmetric


def test_identical_runs_are_level_and_a_dominating_run_is_significant():
    rng = np.random.default_rng(1)
    solved = rng.random(200) < 0.6
    cost = rng.random(200) / 1000
    same = paired("a", "b", solved, solved, cost, cost)
    assert (same.wins, same.losses, same.p_value) == (0, 0, 1.0)
    assert same.accuracy_diff_ci == (0.0, 0.0) and same.cost_diff_ci == (0.0, 0.0)
    assert same.verdict().startswith("a is level with b (0 won, 0 lost of 200), at no more cost; not significant")

    better = paired("a", "b", np.ones(200, bool), solved, cost / 2, cost)
    assert better.wins == int((~solved).sum()) and better.losses == 0
    assert better.p_value < 1e-20 and better.accuracy_diff_ci[0] > 0 and better.cost_diff_ci[1] < 0
    # Half the cost on every item: a change of -50% in every resample, however the resample weighs the items.
    assert better.cost_change == pytest.approx(-0.5) and better.cost_change_ci == pytest.approx((-0.5, -0.5))
    spread = paired("a", "b", solved, solved, np.zeros(200), cost)  # a pays nothing: -100%, never below
    assert spread.cost_change == -1.0 and spread.cost_change_ci == (-1.0, -1.0)
    assert "above b" in better.verdict() and "significant (p < 0.05)" in better.verdict()
    with pytest.raises(ConfigError, match="share no items"):
        paired("a", "b", np.array([], bool), np.array([], bool), np.array([]), np.array([]))


def test_compare_runs_of_the_evaluator_on_the_same_items(data_dir, tmp_path):
    common = ["--data", data_dir / "routerbench", "--part", "dev", "--dev-fraction", 0.1, "--limit", 120]
    for spec in ("cascade", "always:gpt-4", "knn"):
        result = invoke("eval", "routerbench", "-o", spec, *common, "--out", tmp_path / "runs")
        assert result.exit_code == 0, result.output
    runs = tmp_path / "runs"
    result = invoke("compare", runs / "cascade", runs / "always_gpt-4", runs / "knn", "--json")
    assert result.exit_code == 0, result.output
    against_gpt4, against_knn = json.loads(result.output)

    cascade, gpt4 = (read_items(runs / name / "items.jsonl") for name in ("cascade", "always_gpt-4"))
    by_id = {r["id"]: r for r in gpt4}
    wins = sum(r["solved"] and not by_id[r["id"]]["solved"] for r in cascade)
    losses = sum(by_id[r["id"]]["solved"] and not r["solved"] for r in cascade)
    assert (against_gpt4["wins"], against_gpt4["losses"], against_gpt4["n"]) == (wins, losses, 120)
    assert wins + losses > 0  # the two policies really differ on some items
    assert against_gpt4["a"] == "cascade" and against_gpt4["b"] == "always:gpt-4" and against_knn["b"] == "knn"
    assert against_gpt4["mcnemar_p"] == pytest.approx(mcnemar_exact_p(wins, losses))
    low, high = against_gpt4["accuracy_diff_ci95"]
    assert low <= against_gpt4["accuracy_diff"] <= high and low < high
    low, high = against_gpt4["cost_diff_ci95_usd"]
    assert high < 0  # always:gpt-4 pays more on every item
    assert against_gpt4["cost_diff_usd"] == pytest.approx(
        np.mean([r["cost_usd"] for r in cascade]) - np.mean([r["cost_usd"] for r in gpt4]))

    table = invoke("compare", runs / "cascade", runs / "always_gpt-4")
    assert table.exit_code == 0 and f"cascade is below always:gpt-4 ({wins} won, {losses} lost of 120)" in \
        table.output.replace("\n", " ")

    # The report puts every policy against the best single model, item by item, in Markdown and HTML.
    report = invoke("report", runs, "--out", tmp_path / "report")
    assert report.exit_code == 0, report.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Against always:gpt-4, item by item:" in md
    assert f"| cascade | {wins} / {losses} | {against_gpt4['mcnemar_p']:.3g} | {against_gpt4['accuracy_diff']:+.3f} [" in md
    assert "| knn | " in md and "| always:gpt-4 | " not in md.split("item by item:")[1]
    assert f"<td>{wins} / {losses}</td>" in (tmp_path / "report" / "report.html").read_text()


def test_runs_of_different_items_are_refused_naming_the_difference(data_dir, tmp_path):
    for limit, out in ((30, "a"), (40, "b")):
        result = invoke("eval", "routerbench", "-o", "cascade", "--data", data_dir / "routerbench", "--part", "dev",
                        "--dev-fraction", 0.1, "--limit", limit, "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
    result = invoke("compare", tmp_path / "a" / "cascade", tmp_path / "b" / "cascade")
    assert result.exit_code == 2
    assert "hold different items (0 only in the first, 10 only in the second)" in result.output
    result = invoke("compare", tmp_path / "a" / "cascade", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no results.json" in result.output
