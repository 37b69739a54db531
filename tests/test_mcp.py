"""MCP both ways, against real processes: a server written here with the `mcp` SDK (stdio subprocess and streamable
HTTP on 127.0.0.1) imported as tools, and `orchestra mcp serve` listed and called by the SDK's own client.

Every test (or fixture) closes the connections it opens, and for stdio servers asserts that each process it started
(its pid written to PID_FILE by the fixture server) is gone afterwards: nothing outlives the test that started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp_types import (  # noqa: E402
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from orchestra.backends.scripted import ScriptedBackend  # noqa: E402
from orchestra.config import PoolConfig, load_config  # noqa: E402
from orchestra.errors import ConfigError  # noqa: E402
from orchestra.pool import build_pool  # noqa: E402
from orchestra.preferences import Limits  # noqa: E402
from orchestra.rollout.episode import run_episode  # noqa: E402
from orchestra.task import Task  # noqa: E402
from orchestra.tools.mcp import (  # noqa: E402
    McpServerConfig,
    close_tools,
    connection_of,
    mcp_connect,
    mcp_tools,
    render_result,
)
from orchestra.tools.toolbox import Toolbox  # noqa: E402
from orchestra.types import Termination, ToolCall  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SERVER = textwrap.dedent('''
    """A small MCP server for orchestra's tests; counts the calls that reach it."""
    import asyncio, collections, os, sys
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    if os.environ.get("PID_FILE"):
        with open(os.environ["PID_FILE"], "a") as f:
            f.write(f"{os.getpid()}\\n")
    app = MCPServer("fixture", log_level="ERROR")
    CALLS = collections.Counter()

    @app.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        CALLS["echo"] += 1
        return text

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        CALLS["add"] += 1
        return a + b

    @app.tool()
    def fail(reason: str) -> str:
        """Always fail with the reason."""
        raise ToolError(reason)

    @app.tool()
    async def nap(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "rested"

    @app.tool()
    def die() -> str:
        """Kill this server's own process in the middle of the call."""
        os._exit(3)

    @app.tool()
    def calls(name: str) -> int:
        """How many calls of `name` reached this server."""
        return CALLS[name]

    if __name__ == "__main__":
        if sys.argv[1:2] == ["http"]:
            app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
        else:
            app.run()
''')


@pytest.fixture(scope="module")
def server_script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "fixture_server.py"
    path.write_text(SERVER)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited with {process.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def http_url(server_script):
    port = _free_port()
    process = subprocess.Popen([sys.executable, str(server_script), "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module", params=["stdio", "http"])
def toolbox(request, server_script, tmp_path_factory) -> Toolbox:
    pids = tmp_path_factory.mktemp("pids") / "pids"
    if request.param == "stdio":
        config = McpServerConfig(command=[sys.executable, str(server_script)], prefix="fx_", timeout_s=20,
                                 usd_per_call=0.002, latency_s=0.5, env={"PID_FILE": str(pids)})
    else:
        config = McpServerConfig(url=request.getfixturevalue("http_url"), prefix="fx_", timeout_s=20,
                                 usd_per_call=0.002, latency_s=0.5)
    connection, tools = mcp_connect(config)
    try:
        yield Toolbox.of(tools)
    finally:
        connection.close()
    if request.param == "stdio":
        assert _all_gone(_started(pids), expected=1)


async def _call(toolbox: Toolbox, tool_name: str, **arguments):
    return await toolbox.call(ToolCall("c1", tool_name, arguments))


def test_tools_import_with_the_servers_schemas_names_and_prices(toolbox):
    specs = {s.name: s for s in toolbox.specs()}
    assert set(specs) == {"fx_echo", "fx_add", "fx_fail", "fx_nap", "fx_die", "fx_calls"}
    add = specs["fx_add"]
    assert add.parameters["properties"] == {"a": {"title": "A", "type": "integer"},
                                            "b": {"title": "B", "type": "integer"}}
    assert add.parameters["required"] == ["a", "b"]
    assert add.description == "Add two integers."
    assert add.to_openai()["function"]["description"] == "Add two integers. [cost: $0.002 per call; ~0.5 s]"


async def test_calls_go_through_the_session_and_are_priced(toolbox):
    echoed = await _call(toolbox, "fx_echo", text="héllo 世界 — ¿qué tal? مرحبا")
    assert (echoed.status, echoed.content) == ("ok", "héllo 世界 — ¿qué tal? مرحبا")
    assert echoed.cost_usd == pytest.approx(0.002)
    added = await _call(toolbox, "fx_add", a=2, b=40)
    assert (added.status, added.content) == ("ok", "42")
    failed = await _call(toolbox, "fx_fail", reason="the disk is full")
    assert failed.status == "tool_error" and "the disk is full" in failed.content


async def test_schema_violating_arguments_never_reach_the_server(toolbox):
    before = int((await _call(toolbox, "fx_calls", name="add")).content)
    for bad in ({"a": 1}, {"a": 1.5, "b": 2}, {"a": "1", "b": 2}, {"a": True, "b": 2}):
        refused = await toolbox.call(ToolCall("c", "fx_add", bad))
        assert refused.status == "format_error" and "fx_add" in refused.content, bad
    assert int((await _call(toolbox, "fx_calls", name="add")).content) == before
    assert (await _call(toolbox, "fx_add", a=1, b=1)).content == "2"
    assert int((await _call(toolbox, "fx_calls", name="add")).content) == before + 1


async def test_concurrent_calls_share_the_session_without_queueing(toolbox):
    started = time.perf_counter()
    naps = await toolbox.call_many([ToolCall(f"c{i}", "fx_nap", {"seconds": 1.0}) for i in range(4)])
    assert [o.content for o in naps] == ["rested"] * 4
    assert time.perf_counter() - started < 2.5  # four 1 s calls overlapped on one session


async def test_a_slow_call_times_out_and_the_session_survives(server_script, tmp_path):
    pids = tmp_path / "pids"
    connection, tools = mcp_connect(McpServerConfig(command=[sys.executable, str(server_script)], timeout_s=1.5,
                                                    env={"PID_FILE": str(pids)}))
    try:
        box = Toolbox.of(tools)
        started = time.perf_counter()
        slow = await _call(box, "nap", seconds=30)
        assert slow.status == "tool_error" and "timed out after 1.5 s" in slow.content
        assert time.perf_counter() - started < 5
        assert (await _call(box, "echo", text="still here")).content == "still here"
    finally:
        await asyncio.to_thread(connection.close)
    assert "closed" in (await _call(box, "echo", text="after close")).content
    assert await _all_gone_async(_started(pids), expected=1)  # closing stopped the server mid-nap too


async def test_a_server_that_dies_mid_call_is_one_observation_and_the_episode_goes_on(server_script, tmp_path):
    pids = tmp_path / "pids"
    connection, tools = mcp_connect(McpServerConfig(command=[sys.executable, str(server_script)],
                                                    env={"PID_FILE": str(pids)}, name="fixture", timeout_s=20))
    script = [_tool_call("die"), _tool_call("echo", text="back"), _tool_call("die"), _tool_call("echo", text="again"),
              "The server is gone; answering from what I have."]
    try:
        tr = await run_episode(Task("t", "q"), ScriptedBackend(script), Toolbox.of(tools), limits=Limits(max_turns=8))
    finally:
        await asyncio.to_thread(connection.close)
    died, back, died_again, gone = tr.observations
    assert tr.termination == Termination.FINAL_MESSAGE and tr.final_answer.startswith("The server is gone")
    assert died.status == "tool_error" and "MCP server 'fixture' died during a call to die" in died.content
    assert (back.status, back.content) == ("ok", "back")  # reconnected once: a fresh server process
    assert died_again.status == "tool_error" and "died during a call to die" in died_again.content
    assert gone.status == "tool_error" and "'fixture' is unavailable" in gone.content
    assert "died during a call to die" in gone.content and gone.latency_s < 0.5  # fails fast, same reason
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2 and all(await asyncio.gather(*(_exits(pid) for pid in started)))  # both really died


async def test_a_server_that_exited_between_calls_is_restarted_before_the_next_call_is_sent(server_script, tmp_path):
    pids = tmp_path / "pids"
    connection, tools = mcp_connect(McpServerConfig(command=[sys.executable, str(server_script)],
                                                    env={"PID_FILE": str(pids)}, timeout_s=20))
    try:
        box = Toolbox.of(tools)
        assert (await _call(box, "echo", text="one")).content == "one"
        first = int(pids.read_text())
        os.kill(first, signal.SIGKILL)
        assert await _exits(first)
        await asyncio.sleep(0.2)  # let the session read the end of the pipe
        again = await _call(box, "echo", text="two")
        assert (again.status, again.content) == ("ok", "two")  # the call was sent to a new process, not lost
    finally:
        await asyncio.to_thread(connection.close)
    assert await _all_gone_async(_started(pids), expected=2)  # the replacement stopped with the connection


async def test_an_episode_calls_imported_tools_with_a_scripted_orchestrator(toolbox):
    script = [_tool_call("fx_add", a=20, b=22) + _tool_call("fx_echo", text="κόσμε"), "42 κόσμε"]
    tr = await run_episode(Task("t", "q"), ScriptedBackend(script), toolbox, limits=Limits(max_turns=4))
    assert [o.content for o in tr.observations] == ["42", "κόσμε"]
    assert tr.termination == Termination.FINAL_MESSAGE and tr.final_answer == "42 κόσμε"
    assert tr.cost_usd == pytest.approx(0.004)


def test_pool_yaml_expands_an_mcp_entry_to_its_allow_listed_tools(server_script, tmp_path):
    pids = tmp_path / "pids"
    pool = _pool(tmp_path, {"command": [sys.executable, str(server_script)], "tools": ["add", "echo"],
                            "prefix": "fx_", "usd_per_call": 0.01, "env": {"PID_FILE": str(pids)}})
    built = build_pool(pool)
    try:
        assert [t.name for t in built.tools] == ["calculator", "fx_add", "fx_echo"]
        assert built.tools[1].spec.cost.usd_per_call == 0.01
        assert connection_of(built.tools[0]) is None and connection_of(built.tools[1]) is connection_of(built.tools[2])
    finally:
        asyncio.run(built.aclose())  # the pool closes its MCP session; its server process stops
    assert _all_gone(_started(pids), expected=1)
    assert close_tools(built.tools) == 0 and asyncio.run(built.aclose()) is None  # closing again is a no-op


@pytest.mark.parametrize(("mcp", "message"), [
    ({"command": ["x"], "url": "http://127.0.0.1:1/mcp"}, "tools.1.mcp: .*exactly one of `command`"),
    ({"url": "ftp://example.org"}, "tools.1.mcp: .*url must start with http"),
    ({"command": ["x"], "prefix": "a b"}, "tools.1.mcp.prefix"),
    ({"command": ["x"], "timeout_s": 0}, "tools.1.mcp.timeout_s"),
    ({"command": ["x"], "colour": "red"}, "tools.1.mcp.colour"),
])
def test_a_bad_mcp_entry_fails_at_load_naming_the_field(tmp_path, mcp, message):
    with pytest.raises(ConfigError, match=message):
        _pool(tmp_path, mcp)


def test_an_unreachable_server_or_unknown_tool_fails_at_build_naming_the_field(server_script, tmp_path):
    with pytest.raises(ConfigError, match=r"tools\.1\.mcp: cannot connect to MCP server .*no-such-mcp-server"):
        build_pool(_pool(tmp_path, {"command": ["no-such-mcp-server"]}))
    with pytest.raises(ConfigError, match=r"tools\.1\.mcp: cannot connect .*127\.0\.0\.1"):
        build_pool(_pool(tmp_path, {"url": f"http://127.0.0.1:{_free_port()}/mcp", "connect_timeout_s": 5}))
    pids = tmp_path / "pids"
    with pytest.raises(ConfigError, match=r"tools\.1\.mcp\.tools: .*no tool 'mul'; it has: add, calls, die"):
        build_pool(_pool(tmp_path, {"command": [sys.executable, str(server_script)], "tools": ["add", "mul"],
                                    "env": {"PID_FILE": str(pids)}}))
    assert _all_gone(_started(pids), expected=1)  # the refused server was stopped, not left running


@pytest.mark.parametrize(("block", "text"), [
    (TextContent(text="plain"), "plain"),
    (ImageContent(data="aGVsbG8=", mime_type="image/png"), "[image: image/png, 5 bytes]"),
    (ResourceLink(name="report", uri="file:///r.pdf", mime_type="application/pdf"),
     "[resource link: report <file:///r.pdf>, application/pdf]"),
    (EmbeddedResource(resource=TextResourceContents(uri="file:///a.txt", text="body")), "[resource <file:///a.txt>]\nbody"),
    (EmbeddedResource(resource=BlobResourceContents(uri="file:///b.bin", blob="AAAA")),
     "[resource <file:///b.bin>, 3 bytes]"),
])
def test_every_content_block_becomes_text_and_none_is_dropped(block, text):
    assert render_result(CallToolResult(content=[TextContent(text="first"), block])) == f"first\n{text}"


def test_structured_content_alone_is_rendered_as_json():
    assert render_result(CallToolResult(content=[], structured_content={"n": 1})) == '{"n": 1}'


EXPORT_POOL = """\
orchestrator: {kind: bundled, model: smollm2-135m-instruct}
tools:
  - builtin: calculator
  - name: helper
    description: a small model
    expert: {kind: bundled, model: smollm2-135m-instruct}
    latency_s: 2.0
limits: {banned_tools: [helper]}
"""


async def test_mcp_serve_round_trips_with_the_official_client_over_stdio(tmp_path):
    pool = tmp_path / "pool.yaml"
    pool.write_text(EXPORT_POOL)
    ours = {t.name: t.spec for t in build_pool(load_config(pool, PoolConfig)).tools}
    params = StdioServerParameters(command=sys.executable, args=["-m", "orchestra", "mcp", "serve", "--pool", str(pool)],
                                   cwd=str(REPO))
    async with Client(params, read_timeout_seconds=60) as client:
        listed = (await client.list_tools()).tools
        assert [t.name for t in listed] == ["calculator"]  # the banned expert is not exported
        calc = listed[0]
        assert calc.input_schema == ours["calculator"].parameters
        assert calc.description == ours["calculator"].rendered_description()
        assert calc.meta["orchestra/cost"]["usd_per_call"] == ours["calculator"].cost.usd_per_call
        result = await client.call_tool("calculator", {"expression": "6 * 7"})
        assert (result.is_error, result.content[0].text) == (False, "42")
        assert result.meta["orchestra/status"] == "ok"
        bad = await client.call_tool("calculator", {"expression": 42})
        assert bad.is_error and "invalid arguments for calculator" in bad.content[0].text
        unknown = await client.call_tool("helper", {"question": "hi"})
        assert unknown.is_error and "not allowed" in unknown.content[0].text


async def test_mcp_serve_round_trips_over_http_and_reimports_as_tools(tmp_path):
    pool = tmp_path / "pool.yaml"
    pool.write_text(EXPORT_POOL)
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "orchestra", "mcp", "serve", "--pool", str(pool),
                                "--transport", "http", "--port", str(port)], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(_wait_for_port, port, process, 60.0)
        tools = await asyncio.to_thread(mcp_tools, McpServerConfig(url=f"http://127.0.0.1:{port}/mcp", prefix="re_"))
        try:
            box = Toolbox.of(tools)
            assert [s.name for s in box.specs()] == ["re_calculator"]
            assert (await _call(box, "re_calculator", expression="2 ** 10")).content == "1024"
        finally:
            assert await asyncio.to_thread(close_tools, tools) == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode is not None


def _tool_call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}</tool_call>"


def _started(pids: Path) -> list[int]:
    """The pids the fixture server wrote to its PID_FILE (one line per process started)."""
    return [int(p) for p in pids.read_text().split()] if pids.exists() else []


def _all_gone(pids: list[int], *, expected: int, timeout_s: float = 5.0) -> bool:
    """Whether exactly `expected` processes were started and every one of them is gone within `timeout_s`."""
    assert len(pids) == expected, f"expected {expected} server processes, PID_FILE lists {pids}"
    return all(asyncio.run(_exits(pid, timeout_s)) for pid in pids)


async def _all_gone_async(pids: list[int], *, expected: int, timeout_s: float = 5.0) -> bool:
    assert len(pids) == expected, f"expected {expected} server processes, PID_FILE lists {pids}"
    return all(await asyncio.gather(*(_exits(pid, timeout_s) for pid in pids)))


async def _exits(pid: int, timeout_s: float = 5.0) -> bool:
    """Whether process `pid` is gone (and reaped) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


def _pool(tmp_path: Path, mcp: dict) -> PoolConfig:
    path = tmp_path / "pool.yaml"
    path.write_text(json.dumps({"orchestrator": {"kind": "bundled", "model": "smollm2-135m-instruct"},
                                "tools": [{"builtin": "calculator"}, {"mcp": mcp}]}))
    return load_config(path, PoolConfig)
