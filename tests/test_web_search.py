"""web_search (Tavily) against a scripted Tavily server on 127.0.0.1: request shape, prices, pages, no key, errors,
and a planted key that the server echoes back never reaching an observation, a log line or a trajectory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice
from orchestra.pool import build_pool, load_pool_config
from orchestra.rollout.episode import run_episode
from orchestra.task import Task
from orchestra.tools.builtin.web_search import web_search_tool
from orchestra.tools.toolbox import Toolbox
from orchestra.trajectory import trajectory_to_dict
from orchestra.types import ToolCall
from tests.servers.scripted_openai import ScriptedOpenAIServer, tool_then_answer

ROOT = Path(__file__).resolve().parents[1]
PLANTED = "tvly-PLANTED-9f8e7d6c5b4a3210"
ENV = "SEARCH_CREDENTIAL"  # deliberately not *_KEY: only the tool's own scrub can mask it


@dataclass
class ScriptedTavily:
    """Mimics Tavily's `POST /search` and `POST /extract`; records every request (path, headers, JSON body)."""

    echo_auth: bool = False
    status: int = 200
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    base_url: str = ""

    def answer(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        auth = headers.get("Authorization", "")
        if self.status != 200:
            return self.status, {"detail": {"error": f"scripted failure; you sent {auth}"}}
        if path == "/search":
            n = int(body.get("max_results", 5))
            return 200, {"query": body["query"], "response_time": 0.01, "results": [
                {"title": f"Result {i}", "url": f"https://example.org/{i}", "score": 1 - i / 10,
                 "content": f"snippet {i}" + (f" (request said {auth})" if self.echo_auth else "")}
                for i in range(1, n + 1)]}
        if path == "/extract":
            urls = body["urls"]
            return 200, {"response_time": 0.01,
                         "results": [{"url": u, "raw_content": f"full text of {u} " + "x" * 50} for u in urls[:-1]],
                         "failed_results": [{"url": urls[-1], "error": "blocked by robots.txt"}]}
        return 404, {"detail": {"error": "not found"}}


@pytest.fixture
def tavily() -> Iterator[ScriptedTavily]:
    script = ScriptedTavily()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append((self.path, dict(self.headers), body))
            status, answer = script.answer(self.path, dict(self.headers), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield script
    server.shutdown()
    server.server_close()


def _call(box: Toolbox, **arguments: Any):
    return asyncio.run(box.call(ToolCall(id="c1", name="web_search", arguments=arguments)))


def _box(tavily: ScriptedTavily, **options: Any) -> Toolbox:
    return Toolbox.of([web_search_tool(base_url=tavily.base_url, api_key_env=ENV, **options)])


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, PLANTED)
    return PLANTED


def test_search_sends_tavily_request_and_charges_one_search(tavily, key) -> None:
    obs = _call(_box(tavily, usd_per_search=0.01), query="orchestra paper", results=3)
    assert obs.status == "ok", obs.content
    assert "1. Result 1\n   https://example.org/1\n   snippet 1" in obs.content and "Result 3" in obs.content
    assert obs.cost_usd == pytest.approx(0.01)
    ((path, headers, body),) = tavily.requests
    assert path == "/search" and headers["Authorization"] == f"Bearer {PLANTED}"
    assert body == {"query": "orchestra paper", "max_results": 3, "search_depth": "basic", "include_answer": False,
                    "include_raw_content": False}


def test_read_pages_extracts_top_urls_and_charges_pages_read(tavily, key) -> None:
    obs = _call(_box(tavily, usd_per_search=0.01, usd_per_page=0.002, max_page_chars=100), query="q", read_pages=3)
    assert obs.status == "ok", obs.content
    assert [r[0] for r in tavily.requests] == ["/search", "/extract"]
    assert tavily.requests[1][2] == {"urls": ["https://example.org/1", "https://example.org/2",
                                              "https://example.org/3"]}
    assert "--- page https://example.org/1 ---\nfull text of https://example.org/1" in obs.content
    assert "(could not read https://example.org/3: blocked by robots.txt)" in obs.content
    assert obs.cost_usd == pytest.approx(0.01 + 2 * 0.002)  # two pages read; the failed one is not billed


def test_worst_case_is_reserved_and_limits_are_in_the_schema(tavily, key) -> None:
    t = web_search_tool(base_url=tavily.base_url, api_key_env=ENV, usd_per_search=0.01, usd_per_page=0.002,
                        max_pages=2, max_results=4)
    assert t.max_cost_usd({"query": "q"}) == pytest.approx(0.014)
    obs = _call(Toolbox.of([t]), query="q", read_pages=3)
    assert obs.status == "format_error" and "arguments.read_pages: 3 is greater than the maximum of 2" in obs.content
    assert tavily.requests == []


def test_no_key_is_an_error_observation_naming_the_variable(tavily, monkeypatch) -> None:
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    obs = _call(Toolbox.of([web_search_tool(base_url=tavily.base_url)]), query="q")
    assert obs.status == "tool_error" and "set the environment variable TAVILY_API_KEY" in obs.content
    monkeypatch.delenv(ENV, raising=False)
    assert f"set the environment variable {ENV}" in _call(_box(tavily), query="q").content
    assert tavily.requests == []


def test_http_error_is_a_tool_error_at_no_cost_with_the_key_masked(tavily, key) -> None:
    tavily.status = 401
    obs = _call(_box(tavily), query="q")
    assert obs.status == "tool_error" and "HTTP 401" in obs.content and obs.cost_usd == 0.0
    assert "scripted failure; you sent Bearer ***" in obs.content and PLANTED not in obs.content


def test_cli_without_key_is_one_line_naming_the_variable(tavily, tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(textwrap.dedent(f"""\
        orchestrator: {{kind: openai, model: qwen3-8b, base_url: http://127.0.0.1:9/v1}}
        tools:
          - builtin: web_search
            options: {{api_key_env: MY_TAVILY_KEY, base_url: {tavily.base_url}}}
    """))
    env = {k: v for k, v in os.environ.items() if k != "MY_TAVILY_KEY"}
    done = subprocess.run([sys.executable, "-m", "orchestra", "tool", "call", "web_search", '{"query": "x"}',
                           "--pool", str(pool)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "set the environment variable MY_TAVILY_KEY" in lines[0], done.stderr
    assert done.stdout == "" and tavily.requests == []


def test_planted_key_echoed_by_the_server_never_reaches_logs_or_trajectory(tavily, key, caplog) -> None:
    tavily.echo_auth = True
    caplog.set_level(logging.DEBUG)
    with ScriptedOpenAIServer(tool_then_answer("web_search", {"query": "who wrote it", "read_pages": 1})) as llm:
        backend = OpenAICompatBackend("qwen3-8b", llm.base_url, price=ModelPrice(1.0, 2.0))
        box = Toolbox.of([web_search_tool(base_url=tavily.base_url, api_key_env=ENV)])
        trajectory = asyncio.run(run_episode(Task("t", "Search the web."), backend, box))
        sent_to_model = json.dumps([r.body for r in llm.requests])
    (obs,) = trajectory.observations
    assert obs.status == "ok" and "(request said Bearer ***)" in obs.content, obs.content
    assert any(PLANTED in json.dumps(r[1]) for r in tavily.requests)  # the key really went out, and came back
    assert PLANTED not in json.dumps(trajectory_to_dict(trajectory), default=str)
    assert PLANTED not in sent_to_model
    assert PLANTED not in caplog.text


def test_pool_options_build_the_tool(tavily, key, tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(textwrap.dedent(f"""\
        orchestrator: {{kind: openai, model: qwen3-8b, base_url: http://127.0.0.1:9/v1}}
        tools:
          - builtin: web_search
            options: {{api_key_env: {ENV}, base_url: {tavily.base_url}, usd_per_search: 0.02}}
    """))
    (t,) = build_pool(load_pool_config(pool)).tools
    assert "$0.02 per call" in t.spec.rendered_description()
    assert _call(Toolbox.of([t]), query="q").cost_usd == pytest.approx(0.02)
