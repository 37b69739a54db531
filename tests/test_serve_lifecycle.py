"""`orchestra serve` lifecycle as a real process: V5 (SIGTERM with open streams), V6 (client disconnect cancels the
episode and the model call it runs), V10 (binds 127.0.0.1; refuses other addresses without keys)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from orchestra.trajectory import read_trajectories
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer
from tests.test_serve import ORCHESTRA, route, start_serve, start_serve_command, write_pool


class HangServer:
    """Accepts connections and never answers; records when each one opened and when its client closed it."""

    def __init__(self) -> None:
        self.opened: list[float] = []
        self.closed: list[float] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HangServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready)), daemon=True)
        self._thread.start()
        assert ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        assert self._thread is not None
        self._thread.join(5)

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened.append(time.monotonic())
        while await reader.read(65536):
            pass
        self.closed.append(time.monotonic())
        writer.close()


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def upstream() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(route) as server:
        yield server


def test_v6_client_disconnect_cancels_the_episode_and_its_model_call(tmp_path: Path,
                                                                    upstream: ScriptedOpenAIServer) -> None:
    with HangServer() as hang:
        pool = write_pool(tmp_path / "pool.yaml", upstream.base_url, hang_url=hang.base_url)
        served = start_serve(tmp_path, pool)
        try:
            body = {"model": "scripted", "messages": [{"role": "user", "content": "please hang"}], "stream": True,
                    "orchestra": {"stream_steps": True}}
            with httpx.Client(base_url=served.base_url, timeout=30) as http:
                with http.stream("POST", "/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    lines = response.iter_lines()
                    assert any("hang_expert" in line for line in lines)  # the step that calls the expert
                    assert wait_for(lambda: len(hang.opened) == 1, 5)  # the expert call is in flight
                    gone = time.monotonic()
                # leaving the block closed the stream's connection
                assert wait_for(lambda: len(hang.closed) == 1, 3), "the expert call was never cancelled"
                assert hang.closed[0] - gone <= 2.0

                with pytest.raises(httpx.ReadTimeout):  # the same without streaming: the client gives up
                    http.post("/chat/completions", json={**body, "stream": False}, timeout=httpx.Timeout(5, read=1))
                gone = time.monotonic()
                assert len(hang.opened) == 2
                assert wait_for(lambda: len(hang.closed) == 2, 3), "the expert call was never cancelled"
                assert hang.closed[1] - gone <= 2.0

                after = http.post("/chat/completions", json={"model": "scripted",
                                                             "messages": [{"role": "user", "content": "hi"}]})
                assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "plain answer"
            assert wait_for(lambda: served.stderr().count("disconnected: episode cancelled") == 2, 2)
        finally:
            served.stop()


def test_v5_sigterm_lets_open_streams_finish_refuses_new_connections_and_flushes_trajectories(
        tmp_path: Path, upstream: ScriptedOpenAIServer) -> None:
    upstream.latency_s = 2.0  # each orchestrator call takes this long
    pool = write_pool(tmp_path / "pool.yaml", upstream.base_url)
    runs = tmp_path / "runs"
    served = start_serve(tmp_path, pool, "--trajectories", str(runs), "--grace-s", "10")
    client = served.client(key=None)
    results: list[tuple[str, str | None, float]] = []

    def stream_one() -> None:
        chunks = list(client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = next((c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None)
        results.append((text, finish, time.monotonic()))

    threads = [threading.Thread(target=stream_one) for _ in range(3)]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(upstream.requests) == 3, 10)  # all three episodes are running
    served.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", served.port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        return False

    assert wait_for(refused, 1.5)
    refused_at = time.monotonic()
    for t in threads:
        t.join(15)
    assert served.proc.wait(15) in (0, -signal.SIGTERM)
    assert [(text, finish) for text, finish, _ in results] == [("plain answer", "stop")] * 3
    assert refused_at < min(done for _, _, done in results)  # refused while the streams were still open
    assert max(done for _, _, done in results) - signalled < 10
    trajectories = read_trajectories(runs / "trajectories.jsonl")
    assert len(trajectories) == 3 and {t.final_answer for t in trajectories} == {"plain answer"}


def test_v10_refuses_other_addresses_without_keys(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool.yaml", "http://127.0.0.1:9/v1")
    result = subprocess.run([ORCHESTRA, "serve", "--pool", str(pool), "--host", "0.0.0.0"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "--host 0.0.0.0" in result.stderr and "127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_v10_binds_loopback_by_default(tmp_path: Path, upstream: ScriptedOpenAIServer) -> None:
    served = start_serve(tmp_path, write_pool(tmp_path / "pool.yaml", upstream.base_url))
    try:
        assert f"running on http://127.0.0.1:{served.port}" in served.stderr()
        assert served.client(key=None).models.list().data
        address = _outward_address()
        if address is not None:
            with pytest.raises(OSError):
                socket.create_connection((address, served.port), timeout=1).close()
        with pytest.raises(openai.APIConnectionError):  # the server is really gone after a stop
            served.stop()
            served.client(key=None).models.list()
    finally:
        served.stop()


def test_default_pool_and_an_orchestrator_override(tmp_path: Path, upstream: ScriptedOpenAIServer) -> None:
    bundled = start_serve_command(tmp_path, ["serve"])  # the embedded pool; its model loads on first use only
    try:
        assert [m.id for m in bundled.client(key=None).models.list().data] == ["smollm2-135m-instruct", "orchestra"]
    finally:
        bundled.stop()
    with ScriptedOpenAIServer(lambda request: Reply("from the other orchestrator", usage=(5, 5))) as other:
        pool = write_pool(tmp_path / "pool.yaml", upstream.base_url)
        served = start_serve(tmp_path, pool, "--orchestrator", other.base_url, "--endpoint-model", "scripted")
        try:
            response = served.client(key=None).chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "hi"}])
            assert response.choices[0].message.content == "from the other orchestrator"
            assert len(other.requests) == 1 and not upstream.requests
            assert "calculator" in json.dumps(other.requests[0].body["tools"])  # the pool's tools are kept
        finally:
            served.stop()


def _outward_address() -> str | None:
    """This machine's non-loopback address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address
