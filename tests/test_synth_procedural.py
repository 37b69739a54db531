"""Procedural ToolScale synthesis: derived tools, verified tasks, grading through the τ² environment, export, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra import Limits, ScriptedBackend, Toolbox, run_episode
from orchestra.cli import app
from orchestra.envs.tau.domains import Db, bind, tool_template
from orchestra.envs.tau.domains.derived import ToolsFile, build_domain, load_derived
from orchestra.envs.tau.env import TauEnvironment, check_domain
from orchestra.paths import shared_data
from orchestra.synth.export import export
from orchestra.synth.procedural import synthesize
from orchestra.task import Task
from orchestra.toolcalls import render_hermes
from orchestra.types import Termination, ToolCall, Trajectory

runner = CliRunner()
SHARED = shared_data() / "toolscale_domains"
POLICY = """# Shop policy

As a shop agent, you can help users:
- look up customers and orders, change order status and delivery, cancel orders.

- Cancelled orders cannot be changed.
- The gift wrap cannot be changed after ordering.
"""


def tiny_db() -> dict:
    tiers = ["gold", "silver", "bronze"]
    customers = {f"C{i}": {"customer_id": f"C{i}", "name": {"first_name": f"Ann{i}", "last_name": f"Lee{i}"},
                           "email": f"ann{i}@example.com", "tier": tiers[i % 3]} for i in range(1, 7)}
    statuses = ["pending", "shipped", "cancelled", "pending"]
    orders = {f"O{i}": {"order_id": f"O{i}", "customer_id": f"C{1 + i % 6}", "status": statuses[i % 4],
                        "delivery_mode": ["standard", "express"][i % 2], "gift_wrap": ["paper", "ribbon"][i % 2],
                        "total": 10.5 * i, "items": [{"sku": "x"}]} for i in range(1, 13)}
    return {"customers": customers, "orders": orders}


def write_domain(folder: Path, db: object = None, policy: str | None = POLICY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db.json").write_text(json.dumps(tiny_db() if db is None else db))
    if policy is not None:
        (folder / "policy.md").write_text(policy)
    return folder


def golden_replies(task: dict) -> list[str]:
    criteria = task["evaluation_criteria"]
    calls = [render_hermes(a["name"], a["arguments"]) for a in criteria["actions"]]
    return calls + ["Done. " + " ".join(criteria["communicate_info"])]


async def run_replies(env: TauEnvironment, task: Task, replies: list[str]):
    instance = env.start(task)
    trajectory = await run_episode(instance.task, ScriptedBackend(replies), Toolbox.of(instance.tools),
                                   limits=Limits(max_turns=len(replies) + 1))
    return instance, trajectory, await instance.grade(trajectory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    source = write_domain(tmp_path_factory.mktemp("src") / "shop")
    out = tmp_path_factory.mktemp("out") / "shop"
    synthesize(source, 48, 7, out)
    return out


# ---- the tiny domain: derived tools, kinds, grading --------------------------------------------------------------

def test_tiny_domain_derives_typed_tools_with_policy_constraints(tiny: Path) -> None:
    spec = ToolsFile.model_validate_json((tiny / "tools.json").read_text())
    names = {t.name for t in spec.tools}
    assert {"get_customer", "search_customers", "get_order", "search_orders", "update_order_status",
            "update_order_delivery_mode", "create_order", "delete_order"} <= names
    assert "update_order_gift_wrap" not in names  # the policy freezes it
    status = next(t for t in spec.tools if t.name == "update_order_status")
    transitions = next(c for c in status.constraints if c.type == "transitions").allowed
    assert transitions["cancelled"] == () and "shipped" in transitions["pending"]
    domain = load_derived(tiny)
    template = tool_template(domain.agent_functions()["update_order_status"], write=True)
    schema = template.spec.parameters
    assert schema["properties"]["status"]["enum"] == ["cancelled", "pending", "shipped"]
    assert schema["required"] == ["order_id", "status"] and schema["properties"]["order_id"]["description"]
    policy = (tiny / "policy.md").read_text()
    assert len(policy) <= 1500 and "gift wrap cannot be changed" in policy and "cancelled" in policy


@pytest.mark.parametrize(("tool", "arguments", "message"), [
    ("update_order_status", {"order_id": "O2", "status": "pending"}, "cannot become"),  # O2 is cancelled: final
    ("update_order_status", {"order_id": "O1", "status": "shipped"}, "already"),  # O1 is shipped
    ("create_order", {"customer_id": "C99", "status": "pending"}, "no such record"),
    ("create_order", {"customer_id": "C1", "status": "pending", "total": -3.0}, "negative"),
    ("delete_customer", {"customer_id": "C1"}, ""),  # customers reference nothing: no delete tool derived
    ("get_order", {"order_id": "nope"}, "not found"),
])
async def test_derived_tools_refuse_what_the_rules_forbid(tiny: Path, tool: str, arguments: dict,
                                                          message: str) -> None:
    domain = load_derived(tiny)
    functions = domain.agent_functions()
    if tool not in functions:
        assert not message
        return
    db = Db(domain.load(tiny))
    before = db.canonical_hash()
    fn = functions[tool]
    bound = bind(tool_template(fn, write=domain.is_write(tool)), fn, db)
    result = await Toolbox.of([bound]).call(ToolCall(id="c1", name=tool, arguments=arguments))
    assert result.status != "ok" and message in str(result.content), result
    assert db.canonical_hash() == before


def test_tiny_domain_tasks_cover_every_kind_and_difficulty(tiny: Path) -> None:
    tasks = json.loads((tiny / "tasks.json").read_text())
    stats = json.loads((tiny / "stats.json").read_text())
    assert len(tasks) == stats["tasks"] == 48
    kinds = Counter(t["orchestra"]["kind"] for t in tasks)
    assert set(kinds) == {"read", "write", "multi", "refusal", "create", "delete"}, kinds
    assert {t["orchestra"]["difficulty"] for t in tasks} == {1, 2, 3, 4}
    for task in tasks:
        meta = task["orchestra"]
        assert meta["difficulty"] == len(task["evaluation_criteria"]["actions"])
        golden = {a["name"] for a in task["evaluation_criteria"]["actions"]}
        assert golden < set(meta["tools"]) and len(meta["tools"]) - len(golden) in (1, 2, 3, 4)
    assert {r for t in tasks if (r := t["orchestra"]["refusal_reason"])} == {"final_status", "policy_frozen"}
    splits = json.loads((tiny / "split_tasks.json").read_text())
    assert sorted(splits["train"] + splits["test"]) == sorted(t["id"] for t in tasks) and splits["test"]
    report = check_domain(tiny)
    assert report.ok and report.errors == (), report.render()


async def test_golden_trajectories_solve_every_task_and_empty_ones_solve_none(tiny: Path) -> None:
    env = TauEnvironment("shop", path=tiny)
    raw = {t["id"]: t for t in json.loads((tiny / "tasks.json").read_text())}
    for task in env.tasks():
        spec = raw[env.spec(task).id]
        instance, trajectory, outcome = await run_replies(env, task, golden_replies(spec))
        assert trajectory.termination is Termination.FINAL_MESSAGE
        assert outcome.solved, (task.id, outcome.breakdown)
        assert {t.name for t in instance.tools} == set(spec["orchestra"]["tools"])
        assert instance.task.allowed_tools == frozenset(spec["orchestra"]["tools"])
        empty = Trajectory(task.id, (), (), Termination.FINAL_MESSAGE, final_answer="")
        assert not (await env.start(task).grade(empty)).solved, task.id


async def test_refusal_needs_the_reason_and_an_unchanged_database(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    synthesize(write_domain(tmp_path / "src" / "shop"), 120, 5, folder)
    env = TauEnvironment("shop", path=folder)
    raw = [t for t in json.loads((folder / "tasks.json").read_text()) if t["orchestra"]["kind"] == "refusal"
           and t["orchestra"]["refused"] and t["orchestra"]["difficulty"] <= 2]
    assert raw
    for spec in raw:
        task = env.task(spec["id"])
        reads = golden_replies(spec)[:-1]
        assert all(a["name"].startswith(("get_", "search_")) for a in spec["evaluation_criteria"]["actions"])
        _, _, vague = await run_replies(env, task, [*reads, "Sorry, I cannot do that."])
        assert not vague.solved and vague.breakdown["communicate"] == 0.0
        # complying instead: the refused write is tried, the tool refuses it, the database stays as it was
        refused = spec["orchestra"]["refused"]
        attempt = render_hermes(refused["name"], refused["arguments"])
        _, trajectory, outcome = await run_replies(env, task, [*reads, attempt, "Done."])
        observations = [o for turn in trajectory.turns for o in turn.observations]
        assert observations[-1].status != "ok", observations[-1]
        assert outcome.breakdown["db_match"] == 1.0 and not outcome.solved


def test_same_seed_same_tasks_other_seed_other_tasks(tmp_path: Path) -> None:
    source = write_domain(tmp_path / "src" / "shop")
    texts = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        synthesize(source, 20, seed, tmp_path / name)
        texts.append((tmp_path / name / "tasks.json").read_text())
    assert texts[0] == texts[1] and texts[0] != texts[2]
    assert (tmp_path / "a" / "tools.json").read_text() == (tmp_path / "c" / "tools.json").read_text()


def test_same_seed_same_files_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    source = write_domain(tmp_path / "src" / "shop")
    for hash_seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", "from orchestra.cli import app; app()", "synth", "procedural", "--db", str(source), "--n", "16",
                        "--seed", "9", "--out", str(tmp_path / hash_seed)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
    for name in ("tasks.json", "tools.json", "policy.md", "split_tasks.json", "stats.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_prompts_of_easy_tasks_are_compact(tiny: Path) -> None:
    env = TauEnvironment("shop", path=tiny)
    for task in env.tasks():
        instance = env.start(task)
        tools = json.dumps([t.spec.to_openai() for t in instance.tools])
        chars = len(task.system) + len(task.prompt) + len(tools)
        if len(env.spec(task).actions) <= 2:
            assert chars / 4 < 700, (task.id, chars)


def test_export_writes_jsonl_and_parquet_rows(tiny: Path, tmp_path: Path) -> None:
    assert export(tiny, tmp_path / "set.jsonl") == 48
    rows = [json.loads(line) for line in (tmp_path / "set.jsonl").read_text().splitlines()]
    assert {r["domain"] for r in rows} == {"shop"} and all(r["split"] in ("train", "test") for r in rows)
    assert json.loads(rows[0]["task_json"])["id"] == rows[0]["id"]
    stats = json.loads((tmp_path / "set.jsonl.stats.json").read_text())
    assert stats["domains"]["shop"]["tasks"] == stats["total"]["tasks"] == 48
    pq = pytest.importorskip("pyarrow.parquet")
    assert export(tiny, tmp_path / "set.parquet") == 48
    assert pq.read_table(tmp_path / "set.parquet").num_rows == 48


# ---- CLI: generation, check, bad input -----------------------------------------------------------------------------

def test_cli_generates_a_folder_that_env_check_passes(tmp_path: Path) -> None:
    source = write_domain(tmp_path / "src" / "shop")
    result = runner.invoke(app, ["synth", "procedural", "--db", str(source), "--n", "12", "--seed", "1",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "shop: 12/12 tasks" in result.output
    check = runner.invoke(app, ["env", "check", "tau", "--domain", str(tmp_path / "out")])
    assert check.exit_code == 0 and "12 tasks, 0 failing golden actions" in check.output, check.output


@pytest.mark.parametrize(("case", "expected"), [
    ("not_json", "not JSON"),
    ("no_policy", "no policy.md"),
    ("no_key", "has no key field"),
    ("n_zero", "--n must be at least 1"),
])
def test_bad_input_is_one_line(tmp_path: Path, case: str, expected: str) -> None:
    folder = write_domain(tmp_path / "shop", policy=None if case == "no_policy" else POLICY)
    if case == "not_json":
        (folder / "db.json").write_text("{this is not json")
    if case == "no_key":
        (folder / "db.json").write_text(json.dumps({"things": {"a": {"name": "x"}, "b": {"name": "y"}}}))
    n = "0" if case == "n_zero" else "5"
    result = runner.invoke(app, ["synth", "procedural", "--db", str(folder), "--n", n, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.output, result.output
    if case != "n_zero":
        assert str(folder) in lines[0]


# ---- the shared ToolScale domains -----------------------------------------------------------------------------------

@pytest.mark.skipif(not SHARED.is_dir(), reason=f"ToolScale domains not found at {SHARED}")
async def test_shared_domains_give_verified_tasks_that_grade_as_solved(tmp_path: Path) -> None:
    results = synthesize(SHARED, 200, 0, tmp_path)
    assert len(results) == 10 and sum(r.stats["tasks"] for r in results) == 200
    for result in results:
        report = check_domain(result.folder)
        assert report.ok and report.errors == (), report.render()
        env = TauEnvironment(result.name, path=result.folder)
        raw = {t["id"]: t for t in json.loads((result.folder / "tasks.json").read_text())}
        for task in env.tasks():
            spec = raw[env.spec(task).id]
            _, _, outcome = await run_replies(env, task, golden_replies(spec))
            assert outcome.solved, (result.name, task.id, outcome.breakdown)
            empty = Trajectory(task.id, (), (), Termination.FINAL_MESSAGE, final_answer="")
            assert not (await env.start(task).grade(empty)).solved
    kinds = Counter(k for r in results for k, n in r.stats["by_kind"].items() for _ in range(n))
    assert {"read", "write", "multi", "refusal", "create", "delete"} <= set(kinds)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"ToolScale domains not found at {SHARED}")
def test_derived_domain_builds_from_its_spec_alone(tmp_path: Path) -> None:
    synthesize(SHARED / "bank", 4, 0, tmp_path / "bank")
    spec = ToolsFile.model_validate_json((tmp_path / "bank" / "tools.json").read_text())
    domain = build_domain(spec)
    assert {f.__name__ for f in domain.read_tools} >= {"get_client", "get_beneficiary"}
    assert all(domain.is_write(f.__name__) for f in domain.write_tools)


async def test_training_loads_a_synthesized_folder_as_an_environment(tiny: Path) -> None:
    registry = pytest.importorskip("orchestra.envs.registry")
    suite = registry.load_suite({"name": "tau", "path": str(tiny), "part": "train"})
    assert suite.identity["domain"] == "shop" and 0 < len(suite.tasks) < 48
    examples = suite.examples(0, 6)
    demonstrations = await suite.demonstrate(examples)
    assert len(demonstrations) == len(examples)
    report, ok = suite.check()
    assert ok and "0 failing golden actions" in report
