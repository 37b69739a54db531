"""`orchestra routes`: a run's calls summed up as routes per task type, on a run the real evaluator wrote from the
shared RouterBench data (the fitted cascade, whose routes follow from its chains), and on hand-made trajectories."""

import json
from collections import Counter

from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.evaluate.routes import count_routes, route_of
from orchestra.evaluate.store import read_items


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def turn(*calls):
    return {"completion": {"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in calls]}}


def test_a_route_shows_turns_parallel_calls_models_and_a_final_message():
    trajectory = {"turns": [turn(("ask", {"model": "mixtral"}), ("ask", {"model": "yi-34b"})),
                            turn(("search", {"query": "Тайный вопрос 秘密"})), turn()]}
    assert route_of(trajectory) == "ask(mixtral), ask(yi-34b) -> search -> final"
    assert route_of({"turns": []}) == "(no turn)"
    items = [{"metadata": {"domain": "α"}, "trajectory": trajectory, "solved": True, "cost_usd": 0.25},
             {"metadata": {"domain": "α"}, "trajectory": trajectory, "solved": False, "cost_usd": 0.75},
             {"metadata": {}, "trajectory": {"turns": [turn(("answer", {"model": "gpt-4"}))]}, "solved": True}]
    counted = count_routes(items, by="domain")
    assert list(counted) == ["all", "α"]
    (only,) = counted["α"]
    assert (only.items, only.solved, only.cost_usd) == (2, 1, 0.5)
    assert counted["all"][0].route == "answer(gpt-4)" and counted["all"][0].cost_usd == 0.0


def test_routes_of_an_evaluated_cascade_follow_its_chains(data_dir, tmp_path):
    runs = tmp_path / "runs"
    result = invoke("eval", "routerbench", "-o", "cascade", "--data", data_dir / "routerbench", "--part", "dev",
                    "--dev-fraction", 0.1, "--out", runs, "--no-progress")
    assert result.exit_code == 0, result.output
    run = runs / "cascade"
    chains = json.loads((run / "results.json").read_text())["config"]["orchestrator"]["cascades"]
    items = read_items(run / "items.jsonl")

    result = invoke("routes", run, "--json")
    assert result.exit_code == 0, result.output
    counted = json.loads(result.output)[str(run)]
    assert set(counted) == {i["metadata"]["task_type"] for i in items}
    for task_type, routes in counted.items():
        mine = [i for i in items if i["metadata"]["task_type"] == task_type]
        assert sum(r["items"] for r in routes) == len(mine)
        assert sum(r["solved"] for r in routes) == sum(i["solved"] for i in mine)
        assert [r["items"] for r in routes] == sorted((r["items"] for r in routes), reverse=True)
        chain = chains[task_type]
        for r in routes:  # ask the chain's models one per turn, then answer with the last asked or the chain's end
            *asked, last = r["route"].split(" -> ")
            assert asked == [f"ask({m})" for m in chain[: len(asked)]]
            assert last in {f"answer({chain[-1]})", *(f"answer({m})" for m in chain[: len(asked)][-1:])}
    assert any(len(r["route"].split(" -> ")) >= 3 for routes in counted.values() for r in routes)
    assert len(Counter(r["route"] for routes in counted.values() for r in routes)) >= 5  # all three task types

    table = invoke("routes", run, "--top", 1)
    assert table.exit_code == 0, table.output
    assert "arc-challenge" in table.output and "other routes)" in table.output


def test_a_folder_without_items_is_one_clear_line(tmp_path):
    result = invoke("routes", tmp_path)
    assert result.exit_code == 2
    assert f"error: {tmp_path}: no items.jsonl with items" in result.output
