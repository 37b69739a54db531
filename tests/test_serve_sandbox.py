"""V6 end to end with a sandbox: a client that goes away while the served episode runs model-written code gets that
code killed, its whole process tree, within 2 s (a real `orchestra serve` process, a real sandbox, real HTTP)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx2 as httpx
import yaml

from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, SeenRequest
from tests.test_sandbox_cancel import _stat
from tests.test_serve import PRICE, call, start_serve, task_of

BUSY = "while True: pass"


def spin_then_answer(request: SeenRequest) -> Reply:
    """The scripted orchestrator: runs a busy loop in the sandbox, then (if it ever got the result) answers."""
    answered = any(m.get("role") == "tool" for m in request.messages)
    if "spin" in task_of(request) and not answered:
        return call("code_interpreter", {"code": BUSY})
    return Reply("done", usage=(10, 5))


def descendants(root: int) -> dict[int, tuple[int, int, int]]:
    """Every live descendant of `root` with its (ppid, process group, CPU ticks)."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    found: dict[int, tuple[int, int, int]] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in stats.items() if ppid in frontier and pid not in found}
        found.update({pid: stats[pid] for pid in frontier})
    return found


def burning(root: int, within_s: float = 20.0) -> dict[int, tuple[int, int, int]]:
    """The server's descendants once one of them burns CPU (the sandboxed loop is running)."""
    deadline = time.monotonic() + within_s
    first = descendants(root)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = descendants(root)
        if any(pid in first and s[2] > first[pid][2] + 5 for pid, s in now.items()):
            return {pid: s for pid, s in now.items() if pid in first and s[2] > first[pid][2]}
        first = {**now, **{p: s for p, s in first.items() if p in now}}
    raise AssertionError("the sandboxed busy loop never started")


def test_v6_client_disconnect_kills_the_sandbox_the_episode_runs(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(spin_then_answer) as upstream:
        pool = tmp_path / "pool.yaml"
        pool.write_text(yaml.safe_dump({
            "orchestrator": {"kind": "openai", "model": "scripted", "base_url": upstream.base_url,
                             "max_attempts": 1, "timeout_s": 30, "max_tokens": 64},
            "tools": [{"builtin": "code_interpreter", "options": {"wall_s": 60}}],
            "prices": {"models": {"scripted": PRICE}}, "limits": {"max_turns": 3}}))
        served = start_serve(tmp_path, pool)
        try:
            body = {"model": "scripted", "messages": [{"role": "user", "content": "please spin"}], "stream": True}
            with httpx.Client(base_url=served.base_url, timeout=30) as http, \
                    http.stream("POST", "/chat/completions", json=body) as response:
                assert response.status_code == 200
                running = burning(served.proc.pid)  # the loop runs, 60 s before its wall limit
                gone = time.monotonic()
            # leaving the block closed the connection
            while any(_stat(pid) is not None for pid in running) and time.monotonic() - gone < 2.0:
                time.sleep(0.02)
            alive = [pid for pid in running if _stat(pid) is not None]
            assert not alive, f"sandbox processes {alive} alive {time.monotonic() - gone:.2f} s after disconnect"
            assert served.proc.poll() is None  # the server keeps serving
            after = httpx.post(f"{served.base_url}/chat/completions", timeout=30,
                               json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
            assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"] == "done"
        finally:
            served.stop()
