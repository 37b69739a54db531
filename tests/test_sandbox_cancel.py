"""Cancelling a sandbox run: a `while True: pass` started through the real Toolbox in an asyncio task is killed,
with every process of its tree, within 2 s of the task's cancellation (the way `orchestra serve` cancels an episode
whose client went away), on both the bubblewrap and the fallback path. The shared autouse fixture of
tests/test_sandbox.py also asserts that no process of the run's uid outlives the test."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from orchestra.sandbox import SandboxLimits
from orchestra.sandbox.runner import run_python, run_python_async
from orchestra.tools.builtin.code_interpreter import code_interpreter_tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall
from tests.test_sandbox import backend, nothing_left_running  # noqa: F401 - shared fixtures

BUSY = "while True: pass"


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, process group, CPU ticks) of `pid`, or None when it is gone (or a zombie: it holds nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])


def _tree() -> dict[int, tuple[int, int, int]]:
    """Every live descendant of this process, with its stat."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    found, frontier = {}, {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in stats.items() if ppid in frontier and pid not in found}
        found.update({pid: stats[pid] for pid in frontier})
    return found


async def _busy_sandbox(before: set[int], within_s: float = 15.0) -> dict[int, tuple[int, int, int]]:
    """The sandbox's process tree once its code is burning CPU (ticks of some process grow). Processes that were
    this process's children before the run started (servers other tests left running) are not the sandbox's."""
    deadline = time.monotonic() + within_s
    first = _tree()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = {pid: stat for pid, stat in _tree().items() if pid not in before}
        if any(pid in first and stat[2] > first[pid][2] + 5 for pid, stat in now.items()):
            return now
        first = {**now, **{p: s for p, s in first.items() if p in now}}
    raise AssertionError("the sandboxed busy loop never started running")


async def test_cancelling_the_episode_task_kills_the_sandbox_within_2_s(backend: str) -> None:  # noqa: F811
    box = Toolbox.of([code_interpreter_tool(wall_s=60, backend=backend)])
    before = set(_tree())
    task = asyncio.create_task(box.call(ToolCall("c1", "code_interpreter", {"code": BUSY})))
    running = await _busy_sandbox(before)
    groups = {pgid for _, pgid, _ in running.values()}
    assert running and all(_stat(pid) is not None for pid in running)  # alive, 50 s before its wall limit

    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    returned_s = time.monotonic() - cancelled_at
    while any(_stat(pid) is not None for pid in running) and time.monotonic() - cancelled_at < 2.0:
        await asyncio.sleep(0.02)
    gone_s = time.monotonic() - cancelled_at
    assert not [pid for pid in running if _stat(pid) is not None], f"still alive {gone_s:.2f} s after cancel"
    assert gone_s < 2.0 and returned_s < 2.0
    live_groups = {s[1] for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    assert not groups & live_groups


def test_cancel_event_ends_a_blocking_run_as_killed_cancelled(backend: str) -> None:  # noqa: F811
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    result = run_python(BUSY, SandboxLimits(wall_s=30), backend=backend, cancel=cancel)
    assert (result.status, result.message) == ("killed", "cancelled")
    assert time.monotonic() - started < 3.0


async def test_async_run_without_cancel_is_the_ordinary_result(backend: str) -> None:  # noqa: F811
    result = await run_python_async("print(6 * 7)", SandboxLimits(wall_s=5), backend=backend)
    assert (result.status, result.stdout) == ("ok", "42\n")
    timed = await run_python_async(BUSY, SandboxLimits(wall_s=1, grace_s=0.5), backend=backend)
    assert timed.status == "timeout"
