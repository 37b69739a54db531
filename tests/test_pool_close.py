"""A pool closes what it built: `Pool.aclose` ends its HTTP backends' connections, and `orchestra run` and
`orchestra tool call` close their pool before returning. Checked on the server's side of real sockets
(the scripted OpenAI-compatible server on 127.0.0.1 counts the connections it has not seen closed)."""
from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.pool import build_pool, load_pool_config
from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, SeenRequest

EXPERT_ANSWER = "Ответ: 42"


def _handler(request: SeenRequest) -> Reply:
    """The expert (gpt-5) answers; the orchestrator (qwen3-8b) asks the expert once, then repeats its answer."""
    if request.body["model"] == "gpt-5":
        return Reply(content=EXPERT_ANSWER)
    tool_results = [m for m in request.messages if m.get("role") == "tool"]
    if tool_results:
        return Reply(content=str(tool_results[-1]["content"]))
    call = {"id": "call_0", "type": "function",
            "function": {"name": "expert", "arguments": json.dumps({"question": "Сколько?"})}}
    return Reply(content=None, tool_calls=(call,))


def _pool(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(textwrap.dedent(f"""\
        orchestrator: {{kind: openai, model: qwen3-8b, base_url: {url}}}
        tools:
          - name: expert
            expert: {{kind: openai, model: gpt-5, base_url: {url}}}
    """))
    return path


def _settles(server: ScriptedOpenAIServer, open_connections: int, timeout_s: float = 5.0) -> bool:
    """Whether the server's count of open connections reaches `open_connections` within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.open_connections == open_connections:
            return True
        time.sleep(0.02)
    return False


def test_aclose_ends_every_backend_connection_and_is_idempotent(tmp_path):
    with ScriptedOpenAIServer(_handler) as server:
        pool = build_pool(load_pool_config(_pool(tmp_path, server.base_url)))
        assert len(pool.backends) == 2  # the orchestrator's backend and the expert's, each built once

        async def use_then_close() -> tuple[str, int]:
            observation = await Toolbox.of(pool.tools).call(ToolCall("c1", "expert", {"question": "Сколько?"}))
            await pool.orchestrator.complete([], [], pool.sampling)
            opened = server.open_connections
            await pool.aclose()
            await pool.aclose()
            return observation.content, opened

        content, opened = asyncio.run(use_then_close())
        assert content == EXPERT_ANSWER
        assert opened == 2  # both backends really held a connection
        assert _settles(server, 0), f"{server.open_connections} connections still open after aclose"


def test_run_and_tool_call_close_their_pool_before_returning(tmp_path):
    runner = CliRunner()
    with ScriptedOpenAIServer(_handler) as server:
        pool = _pool(tmp_path, server.base_url)
        result = runner.invoke(app, ["run", "Сколько?", "--pool", str(pool), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["answer"] == EXPERT_ANSWER
        assert server.connections == 2  # orchestrator and expert, each on its own connection
        assert _settles(server, 0), f"`orchestra run` left {server.open_connections} connections open"

        result = runner.invoke(app, ["tool", "call", "expert", json.dumps({"question": "Сколько?"}),
                                     "--pool", str(pool)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["content"] == EXPERT_ANSWER
        assert server.connections == 3
        assert _settles(server, 0), f"`orchestra tool call` left {server.open_connections} connections open"


def test_the_served_app_closes_its_pool_at_shutdown(tmp_path):
    from fastapi.testclient import TestClient

    from orchestra.commands.serve import build_app

    with ScriptedOpenAIServer(_handler) as server:
        app_ = build_app(_pool(tmp_path, server.base_url), (), None, None, "127.0.0.1", None, None, 1_000_000, 8,
                         None)
        with TestClient(app_) as client:
            reply = client.post("/v1/chat/completions", json={
                "model": "qwen3-8b", "messages": [{"role": "user", "content": "Сколько?"}]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == EXPERT_ANSWER
            assert server.open_connections == 2  # open while serving: the connections are pooled
        assert _settles(server, 0), f"shutdown left {server.open_connections} connections open"
