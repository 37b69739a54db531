"""The code_interpreter tool: its schema, its observations and cost through a real Toolbox, the per-episode
workspace, the default pool and `orchestra tool call` (all running the real sandbox)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.backends.pricing import PriceTable
from orchestra.cli import app
from orchestra.errors import ConfigError
from orchestra.pool import build_pool, load_pool_config
from orchestra.tools.builtin.code_interpreter import SANDBOX_USD_PER_SECOND, code_interpreter_tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall


def test_schema_shows_only_the_code_argument_and_the_price() -> None:
    spec = code_interpreter_tool().spec.to_openai()["function"]
    assert spec["name"] == "code_interpreter"
    assert spec["parameters"]["required"] == ["code"] and list(spec["parameters"]["properties"]) == ["code"]
    assert "$8.3e-06 per second" in spec["description"] and "no network" in spec["description"]


def test_price_matches_the_packaged_table() -> None:
    assert PriceTable.default().tool("python").usd_per_second == SANDBOX_USD_PER_SECOND == 8.3e-6


async def test_a_call_prints_and_is_billed_for_its_sandbox_seconds() -> None:
    toolbox = Toolbox.of([code_interpreter_tool(wall_s=5)])
    obs = await toolbox.call(ToolCall("c1", "code_interpreter", {"code": "print(6 * 7)"}))
    assert obs.status == "ok" and obs.content == "status: ok\nstdout:\n42"
    seconds = obs.cost_usd / SANDBOX_USD_PER_SECOND
    assert 0.005 < seconds <= obs.latency_s  # the sandbox's own clock, inside the call's wall time


async def test_limits_and_exceptions_come_back_as_error_observations() -> None:
    toolbox = Toolbox.of([code_interpreter_tool(wall_s=1)])
    slow, raised, malformed = await toolbox.call_many([
        ToolCall("a", "code_interpreter", {"code": "while True: pass"}),
        ToolCall("b", "code_interpreter", {"code": "1 / 0"}),
        ToolCall("c", "code_interpreter", {"source": "print(1)"}),
    ])
    assert slow.status == "tool_error" and slow.content.startswith("status: timeout (passed the wall-clock limit of 1 s)")
    assert 1.0 * SANDBOX_USD_PER_SECOND <= slow.cost_usd <= 2.0 * SANDBOX_USD_PER_SECOND
    assert raised.status == "tool_error" and "ZeroDivisionError" in raised.content
    assert malformed.status == "format_error" and "code" in malformed.content and malformed.cost_usd == 0


def test_budget_reserves_the_whole_time_limit() -> None:
    t = code_interpreter_tool(wall_s=10)
    assert t.max_cost_usd({"code": "x"}) == pytest.approx((10 + 0.5 + 1) * SANDBOX_USD_PER_SECOND)
    assert t.timeout_s > 10.5  # the toolbox's timeout never fires before the sandbox's own


async def test_workspace_persists_within_an_episode_only() -> None:
    root = Path(tempfile.mkdtemp(prefix="orchestra-ws-", dir="/tmp"))
    root.chmod(0o755)
    try:
        toolbox = Toolbox.of([code_interpreter_tool(wall_s=5, workspace_root=str(root))])
        write = ToolCall("w", "code_interpreter", {"code": "open('n.txt', 'w').write('kept')"})
        read = ToolCall("r", "code_interpreter", {"code": "import os\nprint(os.listdir('.'))"})
        assert (await toolbox.call(write, task_id="../../task-1")).status == "ok"
        same = await toolbox.call(read, task_id="../../task-1")
        other = await toolbox.call(read, task_id="task-2")
        assert same.content.endswith("['n.txt']") and other.content.endswith("[]")
        assert [p.name for p in root.rglob("n.txt")] == ["n.txt"] and not (root.parent / "task-1").exists()
    finally:
        shutil.rmtree(root)


def test_default_pool_includes_the_code_interpreter() -> None:
    pool = build_pool(load_pool_config(None))
    assert "code_interpreter" in [t.name for t in pool.tools]


def test_pool_options_set_limits_and_bad_ones_name_the_field(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps({"tools": [{"builtin": "code_interpreter", "options": {"wall_s": 1.5}}]}))
    (t,) = build_pool(load_pool_config(good)).tools
    assert t.timeout_s == pytest.approx(1.5 + 0.5 + 5)
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"tools": [{"builtin": "code_interpreter", "options": {"wall_s": -1}}]}))
    with pytest.raises(ConfigError, match=r"tools\.0.*wall_s"):
        build_pool(load_pool_config(bad))


def test_cli_tool_call_runs_code_with_no_other_flags() -> None:
    result = CliRunner().invoke(app, ["tool", "call", "code_interpreter", '{"code": "print(1)"}'])
    assert result.exit_code == 0, result.output
    observation = json.loads(result.output)
    assert observation["status"] == "ok" and observation["content"] == "status: ok\nstdout:\n1"
