"""`orchestra serve` as a real process on 127.0.0.1, driven by the official `openai` client (RELIABILITY V1-V4, V7,
bad input). The orchestrator is the scripted OpenAI-compatible server (real HTTP end to end); what it answers is
chosen by the words of the task, so one server process covers every case of this module.

Lifecycle cases (V5 shutdown, V6 disconnect, V10 binding) are in tests/test_serve_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import yaml

from orchestra.trajectory import read_trajectories
from tests.servers.scripted_openai import Fault, Reply, ScriptedOpenAIServer, SeenRequest

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")
KEY_A = "sk-serve-test-alpha-0123456789abcdef"
KEY_B = "sk-serve-test-bravo-0123456789abcdef"
WRONG_KEY = "sk-serve-test-wrong-0123456789abcdef"
BUDGET_B_USD = 0.05
PRICE = {"input": 10.0, "output": 20.0, "provider": "test"}
"""$/M tokens of the scripted orchestrator: usage (100, 50) costs $0.002; a call reserves ~$0.021 (the prompt's
worst-case estimate, with the calculator's schema, plus 64 tokens out), so a $0.05 key holds two calls at once."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pool(path: Path, base_url: str, *, hang_url: str | None = None, max_turns: int = 4) -> Path:
    tools: list[dict[str, Any]] = [{"builtin": "calculator"}]
    prices = {"scripted": PRICE}
    if hang_url is not None:
        tools.append({"name": "hang_expert", "description": "an expert that never answers",
                      "expert": {"kind": "openai", "model": "hang", "base_url": hang_url, "max_attempts": 1,
                                 "timeout_s": 60, "max_tokens": 16}})
        prices["hang"] = {"input": 0.0, "output": 0.0, "provider": "test"}
    pool = {"orchestrator": {"kind": "openai", "model": "scripted", "base_url": base_url, "max_attempts": 1,
                             "timeout_s": 30, "max_tokens": 64},
            "tools": tools, "prices": {"models": prices}, "limits": {"max_turns": max_turns}}
    path.write_text(yaml.safe_dump(pool))
    return path


def task_of(request: SeenRequest) -> str:
    """The task as the orchestrator reads it (the last user message)."""
    users = [m.get("content") or "" for m in request.messages if m.get("role") == "user"]
    return users[-1] if users else ""


def call(name: str, arguments: dict[str, Any], n: int = 0) -> Reply:
    return Reply(content=None, tool_calls=({"id": f"call_{name}_{n}", "type": "function",
                                            "function": {"name": name, "arguments": json.dumps(arguments)}},),
                 usage=(100, 20))


def route(request: SeenRequest) -> Reply | Fault:
    """The scripted orchestrator: what it does is named in the task."""
    task = task_of(request)
    answered = any(m.get("role") == "tool" for m in request.messages)
    if "calculate" in task:
        return Reply("The answer is 42.", usage=(120, 10)) if answered else call("calculator", {"expression": "6*7"})
    if "weather" in task and "tool result" not in task:
        return call("get_weather", {"city": "Paris"})
    if "weather" in task:
        return Reply("It is sunny in Paris.", usage=(100, 10))
    if "hang" in task:
        return Reply("gave up", usage=(10, 5)) if answered else call("hang_expert", {"question": "anything"})
    if "explode" in task:
        return Fault("status", status=500)
    if "pricey" in task:
        return Reply("costly answer", usage=(100, 50))
    return Reply("plain answer", usage=(10, 5))


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, key: str | None = KEY_A, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or "none", max_retries=0, **kwargs)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout_s: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout_s)


def start_serve(tmp: Path, pool: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    return start_serve_command(tmp, ["serve", "--pool", str(pool), *args], env)


def start_serve_command(tmp: Path, command: list[str], env: dict[str, str] | None = None) -> Served:
    """`orchestra <command> --port <free port>` running, once it answers HTTP."""
    import os

    port = free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORCHESTRA, *command, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    served = Served(proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"orchestra serve exited with {proc.returncode}:\n{served.stderr()}")
        try:
            httpx.get(f"{served.base_url}/models", timeout=1)
            return served
        except httpx.TransportError:
            time.sleep(0.1)
    served.stop()
    raise AssertionError(f"orchestra serve did not start:\n{served.stderr()}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(route) as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ScriptedOpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    keys = tmp / "keys.txt"
    keys.write_text(f"# test keys\n{KEY_A}\n{KEY_B} {BUDGET_B_USD}\n")
    pool = write_pool(tmp / "pool.yaml", upstream.base_url)
    server = start_serve(tmp, pool, "--api-keys-file", str(keys), "--max-concurrent", "24",
                         "--max-body-bytes", "20000", "--trajectories", str(tmp / "runs"))
    yield server
    assert server.stop() in (0, -signal.SIGTERM), server.stderr()  # uvicorn re-raises the signal it handled


def test_v7_non_stream_answer_with_cost_latency_and_per_tool_usage(served: Served) -> None:
    response = served.client().chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Please calculate 6 times 7."}])
    assert response.choices[0].message.content == "The answer is 42."
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage is not None and usage.prompt_tokens == 220 and usage.completion_tokens == 30
    # $10/M in, $20/M out: (220 * 10 + 30 * 20) / 1e6
    assert usage.cost_usd == pytest.approx(0.0028, abs=1e-12)
    assert usage.latency_s > 0 and usage.turns == 2
    calculator = usage.tools["calculator"]
    assert (calculator["calls"], calculator["errors"], calculator["cost_usd"]) == (1, 0, 0.0)
    assert 0 < calculator["latency_s"] < usage.latency_s
    assert response.orchestra["termination"] == "final_message"  # type: ignore[attr-defined]


def test_v7_stream_with_steps_and_usage(served: Served) -> None:
    stream = served.client().chat.completions.create(
        model="orchestra", messages=[{"role": "user", "content": "calculate it"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"orchestra": {"stream_steps": True}})
    chunks = list(stream)
    steps = [c.orchestra["step"] for c in chunks if getattr(c, "orchestra", None) and "step" in c.orchestra]
    assert [s["type"] for s in steps] == ["orchestrator", "tool_result", "orchestrator"]
    assert steps[0]["tool_calls"][0]["function"]["name"] == "calculator"
    assert steps[1]["content"] == "42" and steps[1]["status"] == "ok"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is 42."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.cost_usd == pytest.approx(0.0028, abs=1e-12)


def test_v7_client_tools_round_trip_and_preferences_reach_the_orchestrator(served: Served,
                                                                           upstream: ScriptedOpenAIServer) -> None:
    client = served.client()
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                                "parameters": {"type": "object",
                                                               "properties": {"city": {"type": "string"}},
                                                               "required": ["city"]}}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="scripted", messages=messages, tools=[weather],
        extra_body={"orchestra": {"preferences": {"instruction": "Keep it cheap, please.", "cost": 0.9}}})
    assert first.choices[0].finish_reason == "tool_calls"
    (tool_call,) = first.choices[0].message.tool_calls or []
    assert tool_call.function.name == "get_weather" and json.loads(tool_call.function.arguments) == {"city": "Paris"}
    seen = [r for r in upstream.requests if "weather" in task_of(r)]
    assert "Keep it cheap, please." in task_of(seen[-1])
    assert "get_weather" in json.dumps(seen[-1].body.get("tools"))  # the client's tool was offered
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": tool_call.id, "content": "sunny, 24 C"}]
    second = client.chat.completions.create(model="scripted", messages=messages, tools=[weather])
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert "sunny, 24 C" in task_of(upstream.requests[-1])


def test_turn_cap_and_budget_from_the_request(served: Served) -> None:
    capped = served.client().chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "calculate"}], extra_body={"orchestra": {"max_turns": 1}})
    assert capped.choices[0].finish_reason == "length" and capped.orchestra["termination"] == "max_turns"
    broke = served.client().chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "calculate"}],
        extra_body={"orchestra": {"budget_usd": 0.0}})
    assert broke.orchestra["termination"] == "budget" and broke.choices[0].finish_reason == "length"
    assert broke.usage.cost_usd == 0.0 and broke.choices[0].message.content == ""


@pytest.mark.parametrize("send, status, code", [
    (lambda c: c.post("/chat/completions", content=b'{"model": "scripted", "messages": [', headers=_json()),
     400, "invalid_json"),
    (lambda c: c.post("/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
     404, "model_not_found"),
    (lambda c: c.post("/chat/completions", json={"model": "scripted", "messages": [{"role": "user", "content": "x"}],
                                                 "orchestra": {"budget_usd": -1}}), 400, "invalid_value"),
    (lambda c: c.post("/chat/completions", json={"model": "scripted", "messages": [{"role": "user", "content": "x"}],
                                                 "orchestra": {"budgett": 1}}), 400, "invalid_value"),
    (lambda c: c.post("/chat/completions", json={"model": "scripted", "messages": [{"role": "user",
                                                                                   "content": "x" * 30_000}]}),
     413, "request_too_large"),
    (lambda c: c.get("/nowhere"), 404, 404),
    (lambda c: c.delete("/models"), 405, 405),
])
def test_bad_input_gets_the_openai_error_shape_and_the_server_keeps_serving(served: Served, send, status,
                                                                           code) -> None:
    with httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {KEY_A}"}) as http:
        response = send(http)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "code"} and error["code"] == code and error["message"]
        assert http.get("/models").status_code == 200


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def test_negative_budget_with_the_openai_client_names_the_field(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served.client().chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}],
                                                extra_body={"orchestra": {"budget_usd": -0.5}})
    assert caught.value.status_code == 400
    assert "orchestra.budget_usd" in caught.value.body["message"]  # type: ignore[index]


def test_v1_every_route_needs_a_valid_key(served: Served) -> None:
    for key in (None, WRONG_KEY):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=served.base_url, headers=headers) as http:
            for response in (http.get("/models"), http.get("/models/scripted"), http.get("/nowhere"),
                             http.post("/chat/completions", json={"model": "scripted", "messages": []}),
                             http.get("/trajectories")):
                assert response.status_code == 401, response.text
                assert response.json()["error"]["code"] == "invalid_api_key"
                assert WRONG_KEY not in response.text
        with pytest.raises(openai.AuthenticationError):
            served.client(key).chat.completions.create(model="scripted",
                                                       messages=[{"role": "user", "content": "hi"}])
    assert served.client(KEY_A).models.list().data[0].id == "scripted"


def test_v2_oversized_body_refused_before_it_is_read_whole(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode() + b"{" * 1000)
        received = b""
        while chunk := sock.recv(65536):  # answered (and closed) although 99.99% of the body was never sent
            received += chunk
        head = received.decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert '"request_too_large"' in head


def test_v2_a_chunked_body_is_cut_off_at_the_cap(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"x" * 8192
        try:
            for _ in range(64):  # 512 KiB offered; the server stops reading after 20,000 bytes
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in received


def test_v3_per_key_budget_under_20_concurrent_requests(served: Served, upstream: ScriptedOpenAIServer) -> None:
    client = served.client(KEY_B)

    def one(_: int) -> tuple[int, float]:
        try:
            response = client.chat.completions.create(model="scripted",
                                                      messages=[{"role": "user", "content": "pricey question"}])
        except openai.APIStatusError as exc:
            return exc.status_code, 0.0
        return 200, response.usage.cost_usd  # type: ignore[union-attr]

    before = sum("pricey" in task_of(r) for r in upstream.requests)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    for _ in range(40):  # then keep asking until the key is refused
        results.append(one(0))
        if results[-1][0] == 402:
            break
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 402} and 200 in statuses and statuses[-1] == 402
    spent = sum(cost for _, cost in results)
    assert 0 < spent <= BUDGET_B_USD
    sent = sum("pricey" in task_of(r) for r in upstream.requests) - before
    assert sent * 0.002 <= BUDGET_B_USD + 1e-12  # what the upstream billed, counted on its side
    with pytest.raises(openai.APIStatusError) as caught:  # spent keys stay refused; other keys are unaffected
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402 and caught.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert served.client(KEY_A).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content == "plain answer"


def test_v4_over_the_concurrency_limit_is_refused_fast(served: Served, upstream: ScriptedOpenAIServer) -> None:
    upstream.latency_s = 1.5
    try:
        async def burst() -> list[tuple[int, float]]:
            async with httpx.AsyncClient(base_url=served.base_url, timeout=30,
                                         headers={"Authorization": f"Bearer {KEY_A}"}) as http:
                async def one() -> tuple[int, float]:
                    started = time.perf_counter()
                    r = await http.post("/chat/completions",
                                        json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
                    return r.status_code, time.perf_counter() - started
                return await asyncio.gather(*(one() for _ in range(30)))

        results = asyncio.run(burst())
    finally:
        upstream.latency_s = 0.0
    refused = [t for s, t in results if s == 503]
    assert sorted(s for s, _ in results) == [200] * 24 + [503] * 6
    assert max(refused) < 1.0  # answered at once, not after the running episodes


def test_trajectories_are_written_without_keys_and_logs_hold_no_key(served: Served) -> None:
    served.client().chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hello"}])
    path = served.log.parent / "runs" / "trajectories.jsonl"
    trajectories = read_trajectories(path)
    assert trajectories and all(t.metadata["account"].startswith("key:") for t in trajectories)
    text = path.read_text() + served.stderr()
    for key in (KEY_A, KEY_B, WRONG_KEY):
        assert key not in text
    assert "401" in served.stderr()  # the wrong-key requests were logged, without the key


def test_the_viewer_shows_the_served_episodes_behind_the_keys(served: Served) -> None:
    root = served.base_url.removesuffix("/v1")
    page = httpx.get(f"{root}/trajectories", headers={"Authorization": f"Bearer {KEY_A}"})
    assert page.status_code == 200 and "chatcmpl-" in page.text and "calculator" in page.text
    assert httpx.get(f"{root}/trajectories").status_code == 401
    mine = re.findall(r'href="/trajectories/(chatcmpl-[0-9a-f]+)"', page.text)
    other = httpx.get(f"{root}/trajectories", headers={"Authorization": f"Bearer {KEY_B}"}).text
    theirs = re.findall(r'href="/trajectories/(chatcmpl-[0-9a-f]+)"', other)
    assert mine and theirs and not set(mine) & set(theirs)  # each key sees only its own episodes
    hidden = httpx.get(f"{root}/trajectories/{mine[0]}", headers={"Authorization": f"Bearer {KEY_B}"})
    assert hidden.status_code == 404


def test_a_failing_orchestrator_model_is_a_502_or_a_stream_error_event(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "explode"}])
    assert caught.value.status_code == 502 and caught.value.body["code"] == "backend_error"  # type: ignore[index]
    with pytest.raises(openai.APIError, match="orchestrator's model failed"):
        list(client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "explode"}],
                                            stream=True))
    assert client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content == "plain answer"


def test_keys_come_from_the_file_and_the_environment_and_bad_lines_are_named(tmp_path: Path) -> None:
    from orchestra.errors import ConfigError
    from orchestra.serve.auth import KeyRing

    keys = tmp_path / "keys"
    keys.write_text("alpha-key-0001 2.5  # comment\n\nbravo-key-0002\n")
    ring = KeyRing.load(keys, env_value="charlie-key-3, delta-key-4", default_budget_usd=1.0)
    assert len(ring) == 4 and ring.account("wrong") is None and ring.account(None) is None
    assert ring.account("alpha-key-0001").budget.limit_usd == 2.5
    assert ring.account("bravo-key-0002").budget.limit_usd == 1.0
    assert ring.account("delta-key-4").id.startswith("key:") and "delta" not in ring.account("delta-key-4").id
    assert KeyRing.load(None, env_value="").open
    keys.write_text("alpha 1\nbravo -3\n")
    with pytest.raises(ConfigError, match=r"keys:2: budget must be >= 0"):
        KeyRing.load(keys, env_value="")


def test_models_lists_the_orchestrator(served: Served) -> None:
    assert {m.id for m in served.client().models.list().data} == {"scripted", "orchestra"}

