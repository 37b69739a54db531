"""LLM-driven synthesis (`orchestra synth llm`): every stage over real HTTP against a scripted model, with invalid
generations planted at each stage; the tool checks (static, then the sandbox); bad input, one line each."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.envs.tau.env import TauEnvironment, check_domain
from orchestra.sandbox import SandboxLimits
from orchestra.synth.export import export
from orchestra.synth.llm import SynthSettings, prompts, synthesize_llm
from orchestra.synth.llm.endpoints import resolve_model
from orchestra.synth.llm.items import Rejected
from orchestra.synth.llm.schema import TableSchema
from orchestra.synth.llm.toolcheck import sandbox_check, static_check
from orchestra.synth.llm.toolplan import plan_tools, table_def
from orchestra.types import Termination, Trajectory
from tests.servers.scripted_openai import ScriptedOpenAIServer, unused_port
from tests.servers.synth_model import SCHEMAS, TABLES, SynthScript, tool_code
from tests.test_synth_procedural import golden_replies, run_replies

runner = CliRunner()

CUSTOMERS_BAD = json.dumps({"records": [
    {"customer_id": "C-0", "name": "Ada Roe", "email": "ada@example.com", "tier": "basic"},
    {"customer_id": "C-1", "name": "Bo Li", "email": "bo@example.com", "tier": "diamond"},   # not in the enum
    {"customer_id": "C-0", "name": "Cy Ng", "email": "cy@example.com", "tier": "gold"},      # key used above
    {"customer_id": "C-3", "name": 7, "email": "dee@example.com", "tier": "gold"}]})         # wrong type
ORDERS_BAD = json.dumps({"records": [
    {"order_id": "O-0", "customer_id": "C-0", "product_id": "P-0", "status": "pending", "quantity": 1},
    {"order_id": "O-1", "customer_id": "C-404", "product_id": "P-0", "status": "pending", "quantity": 1},
    {"order_id": "O-2", "customer_id": "C-0", "product_id": "P-0", "status": "shipped", "quantity": -2}]})
WRONG_TASK = json.dumps({"reason_for_call": "You want order O-999 cancelled.", "actions": [
    {"name": "update_order_status", "arguments": {"order_id": "O-999", "status": "cancelled"}}]})
UNKNOWN_TOOL = json.dumps({"reason_for_call": "You want a refund for order O-0.", "actions": [
    {"name": "refund_order", "arguments": {"order_id": "O-0"}}]})
ECHO_TASK = json.dumps({"reason_for_call": "You want to confirm customer C-0's tier is basic.", "actions": [
    {"name": "get_customer", "arguments": {"customer_id": "C-0"}}], "communicate_info": ["basic"]})
BAD = {
    ("tables", "tables", 1): "A shop needs customers and orders, I think.",
    ("schema", "products", 1): json.dumps({"key": "price", "fields": SCHEMAS["products"]["fields"]}),
    ("records", "customers/0", 1): CUSTOMERS_BAD,
    ("records", "orders/0", 1): ORDERS_BAD,
    ("records", "products/1", 1): "{'records': [oops",
    ("realism", "products/P-0", 1): json.dumps({"unrealistic": [{"key": "P-1", "reason": "a chess set at $6.50"}]}),
    ("realism", "orders/O-5", 1): json.dumps({"looks": "fine"}),
    ("tool", "get_customer", 1): "```python\nimport os\ndef get_customer(db: dict, customer_id: str) -> dict:\n"
                                 "    return os.environ\n```",
    ("tool", "search_customers", 1): "```python\ndef search_customers(db: dict, field: str, value: str) -> dict:\n"
                                     "    return ().__class__.__base__.__subclasses__()\n```",
    ("tool", "update_order_status", 1): "```python\ndef update_order_status(db: dict, order_id: str, status: str)"
                                        " -> dict:\n    return eval('db')\n```",
    ("tool", "get_product", 1): "```python\ndef get_product(db: dict, product_id: str) -> dict:\n    return {}\n```",
    ("tool", "delete_order", 1): "```python\ndef delete_order(db: dict, order_id: str) -> dict:\n"
                                 "    return db['nope'][order_id]\n```",
    ("tool", "create_order", 1): "```python\ndef create_order(db: dict, customer_id: str,\n```",
    ("tool", "create_order", 2): "```python\ndef create_order(db: dict) -> dict:\n    return {}\n```",
    ("tool", "search_products", 1): '```json\n{"name": "search_products", "arguments": {}}\n```',
    ("intent", "1", 1): json.dumps({"intent": ""}),
    ("task", "*", 1): WRONG_TASK,
    ("task", "*", 2): UNKNOWN_TOOL,
    ("task", "*", 3): ECHO_TASK,
    ("task", "*", 4): json.dumps({"actions": []}),
}
PLANTED = {  # stage -> reasons the planted answers must be rejected for
    "tables": {"bad_json"}, "schema": {"schema"}, "records": {"bad_json"}, "realism": {"realism"},
    "tools": {"static", "tool_crashed", "tool_behaviour"},
    "intents": {"intent"}, "tasks": {"golden_action_failed", "unknown_tool", "solvable_with_zero_actions",
                                     "task_format"},
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, SynthScript, dict]:
    out = tmp_path_factory.mktemp("llm") / "shop"
    script = SynthScript(BAD)
    with ScriptedOpenAIServer(script) as server:
        model = resolve_model("gpt-5-mini", base_url=server.base_url)
        # one request at a time: which task gets a planted "*" answer must not depend on timing
        settings = SynthSettings("shop", out, tables=3, records=10, tasks=10, concurrency=1)
        result = asyncio.run(synthesize_llm(settings, model))
    return out, script, result.report


def test_every_stage_rejects_its_invalid_generations_with_reasons(planted) -> None:
    out, script, report = planted
    stages = report["stages"]
    for stage, reasons in PLANTED.items():
        assert reasons <= set(stages[stage]["reasons"]), (stage, stages[stage])
    assert {"record_schema", "record_consistency"} <= set(report["records_rejected"])
    for item in report["rejected_items"]:
        assert item["reason"] and item["stage"], item
    assert stages["tables"]["accepted"] == 1 and stages["tables"]["rejected"] == 1  # the second try was good
    saved = json.loads((out / "rejections.json").read_text())
    assert saved["stages"].keys() == stages.keys()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejections"]["tools/static"] >= 3 and stats["rejections"]["records/record_consistency"] >= 3
    assert stats["tasks"] >= 3 and stats["generator"] == "orchestra.llm/1"


def test_only_code_that_behaves_as_declared_is_kept(planted) -> None:
    out, script, _ = planted
    tools = json.loads((out / "tools.json").read_text())
    names = {t["name"] for t in tools["tools"]}
    assert "create_order" not in names  # both tries failed
    assert {"get_customer", "search_customers", "update_order_status", "get_product", "delete_order"} <= names
    source = (out / "tools.py").read_text()
    assert "import os" not in source and "eval(" not in source and "__class__" not in source
    compile(source, "tools.py", "exec")  # the kept code is valid Python
    assert script.asked[("tool", "create_order")] == 2


def test_bad_records_are_dropped_and_the_database_is_consistent(planted) -> None:
    out, _, _ = planted
    db = json.loads((out / "db.json").read_text())
    assert "C-1" not in db["customers"] and db["customers"]["C-0"]["name"] == "Ada Roe"
    assert "O-1" not in db["orders"] and "O-2" not in db["orders"]
    assert "P-1" not in db["products"]  # flagged by the realism check
    assert not any(k in db["orders"] for k in ("O-5", "O-6", "O-7", "O-8", "O-9"))  # batch with no verdict
    assert not any(k in db["products"] for k in ("P-5", "P-6"))  # the batch that was not JSON
    for order in db["orders"].values():
        assert order["customer_id"] in db["customers"] and order["product_id"] in db["products"]
    schema = json.loads((out / "schema.json").read_text())
    assert {t["name"] for t in schema["tables"]} == {"customers", "products", "orders"}
    assert schema["tables"][0]["model"]["additionalProperties"] is False


async def test_accepted_tasks_run_in_the_tau_env_and_an_empty_run_solves_none(planted) -> None:
    out, _, _ = planted
    report = check_domain(out)
    assert report.ok and report.errors == () and report.tasks >= 3, report.render()
    env = TauEnvironment("shop", path=out)
    raw = {t["id"]: t for t in json.loads((out / "tasks.json").read_text())}
    assert any(t["orchestra"].get("parent") for t in raw.values())  # evolved tasks are kept too
    for task in env.tasks():
        spec = raw[env.spec(task).id]
        _, _, outcome = await run_replies(env, task, golden_replies(spec))
        assert outcome.solved, (task.id, outcome.breakdown)
        empty = Trajectory(task.id, (), (), Termination.FINAL_MESSAGE, final_answer="")
        assert not (await env.start(task).grade(empty)).solved, task.id


def test_export_reads_the_folder(planted, tmp_path: Path) -> None:
    out, _, _ = planted
    count = export(out, tmp_path / "set.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "set.jsonl").read_text().splitlines()]
    assert count == len(rows) == len(json.loads((out / "tasks.json").read_text()))
    stats = json.loads((tmp_path / "set.jsonl.stats.json").read_text())
    assert stats["total"]["rejections"]["tools/static"] >= 3


def test_rerun_is_served_from_the_cache(planted) -> None:
    out, script, report = planted
    before = dict(script.asked)
    with ScriptedOpenAIServer(script) as server:
        model = resolve_model("gpt-5-mini", base_url=server.base_url)
        again = asyncio.run(synthesize_llm(SynthSettings("shop", out, tables=3, records=10, tasks=10), model))
        assert server.requests == []
    assert dict(script.asked) == before
    assert {s: v["items"] for s, v in again.report["stages"].items()} == {
        s: v["items"] for s, v in report["stages"].items()}


@pytest.mark.parametrize("text, expected", [
    ('{"a": [1]}', {"a": [1]}),
    ('Here you are: {"a": 1} -- enjoy', {"a": 1}),
    ('Sure.\n```json\n{"a": 2}\n```', {"a": 2}),
    ('[{"a": 3}]', [{"a": 3}]),
    ('Tables [below]: {"a": 4}', {"a": 4}),
    ('{"tables": [{"name": "x"}, {"name": "y"', None),  # cut at max_tokens: the inner objects are not the answer
    ("def f():\n    return 1", None),
    ("", None),
])
def test_extract_json_takes_the_answer_or_rejects(text: str, expected) -> None:
    from orchestra.synth.llm.items import extract_json

    if expected is None:
        with pytest.raises(Rejected) as caught:
            extract_json(text)
        assert caught.value.reason == "bad_json"
    else:
        assert extract_json(text) == expected


async def test_another_seed_or_model_is_asked_again(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(SynthScript()) as server:
        def settings(seed: int) -> SynthSettings:
            return SynthSettings("shop", tmp_path / "shop", tables=1, records=2, tasks=1, seed=seed)

        model = resolve_model("gpt-5-mini", base_url=server.base_url)
        await synthesize_llm(settings(0), model)
        first = len(server.requests)
        await synthesize_llm(settings(0), model)
        assert len(server.requests) == first  # all from the cache
        await synthesize_llm(settings(1), model)
        assert len(server.requests) == 2 * first  # another seed: every item is asked again
        await synthesize_llm(settings(1), resolve_model("qwen3-8b", base_url=server.base_url))
        assert len(server.requests) == 3 * first  # another model: likewise
    assert first >= 5


async def test_endpoint_failures_are_not_stored_and_a_rerun_asks_again(tmp_path: Path) -> None:
    """A 500 on the customers schema (after the backend's one attempt) fails the item without storing it; orders,
    which reference customers, are dropped by the references filter; the rerun asks for the customers schema again."""
    from tests.servers.scripted_openai import Fault
    from tests.servers.synth_model import stage_of

    script = SynthScript()
    down = {"on": True}

    def handler(request):
        stage, text = stage_of(request)
        if down["on"] and stage == "schema" and '"name": "customers"' in text.split("Define the fields of table")[1]:
            return Fault("status", status=500)
        return script(request)

    settings = SynthSettings("shop", tmp_path / "shop", tables=3, records=2, tasks=2)
    with ScriptedOpenAIServer(handler) as server:
        model = resolve_model("gpt-5-mini", base_url=server.base_url, max_attempts=1)
        first = await synthesize_llm(settings, model)
        schema = first.report["stages"]["schema"]
        assert schema["failed"] == 2 and schema["reasons"] == {"backend_error": 2}  # both tries
        assert first.report["stages"]["references"]["reasons"] == {"references a table with no schema": 1}
        assert set(json.loads((tmp_path / "shop" / "db.json").read_text())) == {"products"}
        asked = script.asked[("schema", "customers")]
        down["on"] = False
        second = await synthesize_llm(settings, model)
    assert script.asked[("schema", "customers")] == asked + 1
    assert second.report["stages"]["schema"]["failed"] == 0
    assert set(json.loads((tmp_path / "shop" / "db.json").read_text())) == {"customers", "products", "orders"}


# ---- the tool checks -----------------------------------------------------------------------------------------------

def _shop() -> tuple[list[TableSchema], dict]:
    tables = [TableSchema(**t, **SCHEMAS[t["name"]]) for t in TABLES]
    db = {"customers": {f"C-{i}": {"customer_id": f"C-{i}", "name": f"N{i}", "email": f"n{i}@x.io", "tier": "gold"}
                        for i in range(3)},
          "products": {"P-0": {"product_id": "P-0", "title": "Dune", "price": 9.0, "category": "books"}},
          "orders": {"O-0": {"order_id": "O-0", "customer_id": "C-0", "product_id": "P-0", "status": "pending",
                             "quantity": 1}}}
    return tables, db


@pytest.mark.parametrize("code, reason", [
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    import subprocess\n    return {}", "import"),
    ("from os import path\ndef get_customer(db: dict, customer_id: str) -> dict:\n    return {}", "import"),
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    return db.__class__", "dunder"),
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    return getattr(db, 'x')", "forbidden call"),
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    return open('/etc/passwd')", "forbidden call"),
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    exec('1')", "forbidden call"),
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    global X\n    return {}", "forbidden statement"),
    ("class ToolError(Exception):\n    pass\ndef get_customer(db: dict, customer_id: str) -> dict:\n    return {}",
     "top-level"),
    ("print('hi')\ndef get_customer(db: dict, customer_id: str) -> dict:\n    return {}", "top-level"),
    ("def get_customer(db: dict, customer_id) -> dict:\n    return {}", "unannotated"),
    ("def get_customer(db: dict, key: str) -> dict:\n    return {}", "wrong signature"),
    ("def get_client(db: dict, customer_id: str) -> dict:\n    return {}", "function missing"),
    ("def get_customer(db: dict, customer_id: str) -> dict\n    return {}", "syntax error"),
    ("def get_customer(db: dict, customer_id: str) -> dict:\n    return {'x': '__builtins__'}", "dunder"),
])
def test_static_checks_reject_before_anything_runs(code: str, reason: str) -> None:
    tables, _ = _shop()
    planned = next(p for p in plan_tools(tables) if p.tool.name == "get_customer")
    with pytest.raises(Rejected) as caught:
        static_check(code, planned)
    assert caught.value.reason.startswith("static") and reason in caught.value.reason


@pytest.mark.parametrize("tool, body, reason", [
    ("get_customer", "    while True:\n        pass\n", "tool_sandbox: timeout"),
    ("get_customer", "    db['customers'].clear()\n    return {}\n", "tool_behaviour"),  # writes in a lookup
    ("get_customer", "    return db['customers'].get(customer_id, {})\n", "tool_behaviour"),  # no ToolError
    ("update_order_status", "    db['orders'][order_id]['status'] = status\n    return {}\n", "tool_behaviour"),
    ("delete_customer", "    return {}\n", ""),  # customers reference nothing: no delete tool is planned
    ("get_customer", "    return 1 / 0\n", "tool_crashed: ZeroDivisionError"),
])
async def test_sandbox_runs_code_against_a_copy_and_compares_with_the_declared_tool(tool: str, body: str,
                                                                                    reason: str) -> None:
    tables, db = _shop()
    planned = {p.tool.name: p for p in plan_tools(tables)}
    if tool not in planned:
        assert not reason
        return
    p = planned[tool]
    code = p.signature.replace(") -> dict", ") -> dict:") + "\n" + body
    static_check(code, p)
    table = table_def(next(t for t in tables if t.name == p.tool.table))
    snapshot = json.dumps(db, sort_keys=True)
    with pytest.raises(Rejected) as caught:
        await sandbox_check(code, p, table, db, limits=SandboxLimits(wall_s=1.0, memory_mib=256))
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert json.dumps(db, sort_keys=True) == snapshot  # the host's copy is never touched


async def test_correct_code_of_every_planned_tool_passes() -> None:
    """The contracts in the prompts are enough to write code the sandbox check accepts (the scripted good model's)."""
    tables, db = _shop()
    for p in plan_tools(tables):
        table = next(t for t in tables if t.name == p.tool.table)
        params = [x.name for x in p.tool.parameters]
        text = prompts.tool_code("shop", {"signature": p.signature, "contract": p.contract},
                                 table.model_dump(mode="json"), {})[-1].content
        code = tool_code(p.tool.name, params, table.name, table.key, text)
        static_check(code, p)
        await sandbox_check(code, p, table_def(table), db)


def test_model_spec_forms_resolve_like_the_other_commands() -> None:
    url = "http://127.0.0.1:9/v1"
    by_name = resolve_model("gpt-5-mini", base_url=url)
    by_url = resolve_model(url, endpoint_model="gpt-5-mini")
    assert by_name.backend.base_url == by_url.backend.base_url == url and by_name.identity == by_url.identity
    bundled = resolve_model("bundled", max_tokens=64)  # SmolLM2 in process; its weights load on the first call
    assert bundled.backend.model == "smollm2-135m-instruct" and bundled.sampling.max_tokens == 64


# ---- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, expected", [
    ("endpoint_down", "not reachable"),
    ("unknown_model", "no price for model 'no-such-model'"),
    ("no_base_url", "--base-url"),
    ("out_is_file", "is a file"),
    ("zero_tables", "--tables must be at least 1"),
    ("zero_records", "--records must be at least 1"),
    ("zero_tasks", "--tasks must be at least 1"),
    ("url_without_name", "--endpoint-model"),
])
def test_bad_input_is_one_line(tmp_path: Path, case: str, expected: str) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    args = ["synth", "llm", "--domain", "shop", "--model", "gpt-5-mini", "--base-url", url, "--out",
            str(tmp_path / "o")]
    if case == "unknown_model":
        args[5] = "no-such-model"
    if case == "no_base_url":
        args = args[:6] + args[8:]
    if case == "url_without_name":
        args = args[:5] + [url] + args[8:]
    if case == "out_is_file":
        (tmp_path / "o").write_text("x")
    if case.startswith("zero_"):
        args += [f"--{case.removeprefix('zero_')}", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.output, result.output
    if case == "endpoint_down":
        assert url in lines[0]


# ---- the "too easy" filter -----------------------------------------------------------------------------------------

def oracle(tasks: list[dict], kinds: set[str]):
    """A strong model that solves the tasks of `kinds` (it knows their golden actions) and gives up on the rest."""
    from tests.servers.scripted_openai import Reply

    def handler(request) -> Reply:
        messages = request.messages
        prompt = " ".join(str(m.get("content") or "") for m in messages if m["role"] in ("system", "user"))
        matching = [t for t in tasks if t["user_scenario"]["instructions"]["reason_for_call"] in prompt]
        task = max(matching, key=lambda t: len(t["user_scenario"]["instructions"]["reason_for_call"]), default=None)
        if task is None or task["orchestra"]["kind"] not in kinds:
            return Reply(content="Sorry, I cannot help with that.")
        actions = task["evaluation_criteria"]["actions"]
        done = sum(1 for m in messages if m["role"] == "tool")
        if done < len(actions):
            a = actions[done]
            return Reply(content=None, tool_calls=[{"id": f"call_{done}", "type": "function", "function": {
                "name": a["name"], "arguments": json.dumps(a["arguments"])}}])
        return Reply(content="Done. " + " ".join(task["evaluation_criteria"]["communicate_info"]))
    return handler


async def test_too_easy_filter_drops_what_every_strong_model_solves(tmp_path: Path) -> None:
    def settings(name: str) -> SynthSettings:
        return SynthSettings("shop", tmp_path / name, tables=3, records=10, tasks=10, easy_k=2)

    with ScriptedOpenAIServer(SynthScript()) as synth:
        model = resolve_model("gpt-5-mini", base_url=synth.base_url)
        await synthesize_llm(settings("unfiltered"), model)
        tasks = json.loads((tmp_path / "unfiltered" / "tasks.json").read_text())
        reads = [t["id"] for t in tasks if t["orchestra"]["kind"] == "read"]
        assert reads and len(reads) < len(tasks)
        with ScriptedOpenAIServer(oracle(tasks, {"read"})) as reader, \
                ScriptedOpenAIServer(oracle(tasks, {"read", "write"})) as solver:
            strong_reader = resolve_model("qwen3-8b", base_url=reader.base_url, temperature=0.0)
            strong_solver = resolve_model("qwen3-32b", base_url=solver.base_url, temperature=0.0)
            one = await synthesize_llm(settings("one"), model, strong=[strong_reader])
            both = await synthesize_llm(settings("two"), model, strong=[strong_solver, strong_reader])
            assert reader.requests and solver.requests
    kept = json.loads((tmp_path / "one" / "tasks.json").read_text())
    assert one.report["stages"]["too_easy"]["reasons"] == {"too_easy": len(reads)}
    assert [t["id"] for t in kept] == [t["id"] for t in tasks if t["id"] not in reads]
    assert check_domain(tmp_path / "one").ok
    # Every strong model must solve it: the solver solves all, the reader only the reads -> only the reads go.
    kept_two = json.loads((tmp_path / "two" / "tasks.json").read_text())
    assert both.report["stages"]["too_easy"]["reasons"] == {"too_easy": len(reads)}
    assert [t["id"] for t in kept_two] == [t["id"] for t in kept]
