"""Run model-written Python in a sandbox and always come back with a structured result.

`run_python(code, limits)` picks the path (bubblewrap when it works here, else the fallback), gives the run its
own workdir (or the caller's persistent workspace) and, under root, its own uid, starts the launcher in a new
session, feeds it the code on stdin, and supervises it:
- a wall-clock timer: at `wall_s` the process group gets SIGTERM, and SIGKILL `grace_s` (<= 2 s) later;
- once the main process is gone, whatever is left of the run is killed: its process group, and under root every
  process of the run's uid (so nothing survives, even a child that escaped the group);
- stdout and stderr are read concurrently and capped at `output_bytes` each (the rest is drained and dropped, so
  the code never blocks on a full pipe), then escaped for display.
Invariants: the call returns within wall_s + grace_s + ~1 s; it raises only `ConfigError` for a caller mistake or
a host that cannot sandbox at all; every other outcome (crash, limit, refusal) is a `SandboxResult` status.

Cancellation: `run_python_async` runs the same supervision on a thread of its own (not the event loop's shared
executor, which would queue concurrent runs) and awaits it. Cancelling the awaiting task sets the run's `cancel`
event: the supervisor notices within `_CANCEL_POLL_S`, SIGKILLs the process group at once (no grace: nobody is
waiting for the output) and, under root, every process of the run's uid, removes the workdir, and only then does the
cancellation finish. So an episode cancelled by `orchestra serve` (client gone) stops its sandbox within a second,
instead of letting it run to its wall limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from orchestra.errors import ConfigError
from orchestra.sandbox import host, seccomp
from orchestra.sandbox.bwrap import bwrap_command
from orchestra.sandbox.command import Command
from orchestra.sandbox.fallback import fallback_command
from orchestra.sandbox.launcher import MEMORY_EXIT, SETUP_EXIT
from orchestra.sandbox.limits import Backend, SandboxLimits, SandboxResult, Status

_READ_CHUNK = 65536
_CANCEL_POLL_S = 0.05


async def run_python_async(code: str, limits: SandboxLimits = SandboxLimits(), *,
                           workspace: str | Path | None = None, backend: Backend = "auto") -> SandboxResult:
    """`run_python` for async callers. Cancelling the awaiting task kills the run (process group and run uid) and
    waits up to `grace_s` + 2 s for that to finish before the `CancelledError` propagates."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[SandboxResult] = loop.create_future()
    cancel = threading.Event()

    def work() -> None:
        try:
            outcome: tuple[SandboxResult | None, BaseException | None] = (
                run_python(code, limits, workspace=workspace, backend=backend, cancel=cancel), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, which re-raises it
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, future, *outcome)

    threading.Thread(target=work, daemon=True, name="sandbox-run").start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):  # the run's own outcome no longer matters; its cleanup does
            await asyncio.wait_for(asyncio.shield(future), limits.grace_s + 2.0)
        raise


def run_python(code: str, limits: SandboxLimits = SandboxLimits(), *, workspace: str | Path | None = None,
               backend: Backend = "auto", cancel: threading.Event | None = None) -> SandboxResult:
    """Run `code` under `limits`. `workspace`: a directory kept between runs (an episode's files), else a fresh
    one deleted afterwards. `backend`: "bwrap" or "fallback" to force a path ("auto" prefers bwrap). `cancel`:
    setting it kills the run at once; the result is then status `killed`, "cancelled"."""
    path = choose_backend(backend)
    interp = host.interpreter()
    uid = host.allocate_uid() if host.drops_user() else None
    try:
        with _workdir(workspace, uid) as workdir:
            if path == "bwrap":
                command = bwrap_command(interp, workdir, limits,
                                        seccomp=seccomp.filter_program() if seccomp.available() else None)
            else:
                processes = limits.processes if uid is not None else host.user_process_count() + limits.processes
                command = fallback_command(interp, workdir, limits, processes=processes)
            if uid is not None:
                command = Command(command.argv, command.env, command.cwd, ("own-user", *command.layers))
            return _supervise(command, code, limits, uid, path, cancel)
    except BaseException:
        if uid is not None:  # _supervise sweeps on every path it returns from; this covers the ones it raises on
            host.kill_user(uid)
        raise
    finally:
        host.release_uid(uid)


def choose_backend(backend: Backend) -> str:
    """The path a run takes; a forced path that cannot work here is a `ConfigError` naming what is missing."""
    if backend not in ("auto", "bwrap", "fallback"):
        raise ConfigError(f"sandbox backend must be auto, bwrap or fallback, got {backend!r}")
    if backend != "fallback" and host.bwrap_works():
        return "bwrap"
    if backend == "bwrap":
        raise ConfigError("sandbox backend 'bwrap': bubblewrap is not installed or cannot create namespaces "
                          "here (apt-get install bubblewrap)")
    if not seccomp.available():
        raise ConfigError("the fallback sandbox needs seccomp: pip install pyseccomp (and the system libseccomp, "
                          "apt-get install libseccomp2), or install bubblewrap")
    return "fallback"


def _supervise(command: Command, code: str, limits: SandboxLimits, uid: int | None, path: str,
               cancel: threading.Event | None = None) -> SandboxResult:
    started = time.monotonic()
    proc = subprocess.Popen(
        command.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=command.env,
        cwd=command.cwd, start_new_session=True, close_fds=True, **host.user_kwargs(uid))  # type: ignore[call-overload]
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = _CappedReader(proc.stdout, limits.output_bytes), _CappedReader(proc.stderr, limits.output_bytes)
    threading.Thread(target=_feed, args=(proc.stdin, code), daemon=True).start()
    ended = threading.Event()
    waiter = threading.Thread(target=lambda: (proc.wait(), ended.set()), daemon=True)
    waiter.start()
    outcome = _wait(ended, cancel, limits.wall_s)
    timed_out = outcome == "timeout"
    if timed_out:
        _signal_group(proc.pid, signal.SIGTERM)
        waiter.join(limits.grace_s)
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers of a finished run, or the main process after the grace
    if uid is not None:
        host.kill_user(uid)
    waiter.join()
    out.join(1.0)
    err.join(1.0)
    status, message = _classify(proc.returncode, timed_out, limits, path)
    if outcome == "cancelled":
        status, message = "killed", "cancelled"
    stderr = err.text()
    if proc.returncode == SETUP_EXIT and not timed_out:
        message = stderr.strip().splitlines()[-1] if stderr.strip() else "sandbox setup failed"
    exit_code = None if proc.returncode < 0 or status == "killed" else proc.returncode
    return SandboxResult(
        status=status, exit_code=exit_code, stdout=out.text(), stderr=stderr,
        stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        duration_s=time.monotonic() - started, backend=path,  # type: ignore[arg-type]
        layers=command.layers, message=message)


def _wait(ended: threading.Event, cancel: threading.Event | None, wall_s: float) -> str:
    """How waiting for the main process ended: "ended", "timeout" (the wall limit) or "cancelled"."""
    if cancel is None:
        return "ended" if ended.wait(wall_s) else "timeout"
    deadline = time.monotonic() + wall_s
    # Short waits on `ended` return the moment the process exits; only noticing a cancel waits up to a poll.
    while not ended.wait(min(_CANCEL_POLL_S, max(0.0, deadline - time.monotonic()))):
        if cancel.is_set():
            return "cancelled"
        if time.monotonic() >= deadline:
            return "timeout"
    return "ended"


def _settle(future: asyncio.Future[SandboxResult], result: SandboxResult | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


def _classify(returncode: int, timed_out: bool, limits: SandboxLimits, path: str) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"passed the wall-clock limit of {limits.wall_s:g} s"
    # bwrap reports a child killed by signal N as exit status 128 + N
    signum = -returncode if returncode < 0 else returncode - 128 if path == "bwrap" and returncode > 128 else 0
    if signum == signal.SIGXCPU:
        return "timeout", f"passed the CPU limit of {limits.cpu_s} s"
    if signum:
        return "killed", f"killed by {signal.Signals(signum).name}"
    if returncode == MEMORY_EXIT:
        return "memory", f"passed the memory limit of {limits.memory_mib} MiB"
    if returncode == SETUP_EXIT:
        return "error", "sandbox setup failed"
    if returncode:
        return "error", f"exited with status {returncode}"
    return "ok", ""


class _CappedReader:
    """Reads a pipe to EOF on its own thread, keeping the first `cap` bytes."""

    def __init__(self, stream: IO[bytes], cap: int):
        self._stream, self._cap = stream, cap
        self._kept = bytearray()
        self.total = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def truncated(self) -> bool:
        return self.total > self._cap

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._stream.read1(_READ_CHUNK):  # type: ignore[attr-defined]
                self.total += len(chunk)
                if len(self._kept) < self._cap:
                    self._kept += chunk[: self._cap - len(self._kept)]

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        with contextlib.suppress(OSError):
            self._stream.close()

    def text(self) -> str:
        return escape_output(bytes(self._kept))


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\n\t"}


def escape_output(data: bytes) -> str:
    """Bytes as safe display text: invalid UTF-8 as \\xNN, control characters (NUL, ESC, CR...) escaped."""
    return data.decode("utf-8", errors="backslashreplace").translate(_CONTROL)


def _feed(stdin: IO[bytes], code: str) -> None:
    with contextlib.suppress(OSError):
        stdin.write(code.encode("utf-8", errors="replace"))
        stdin.close()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@contextlib.contextmanager
def _workdir(workspace: str | Path | None, uid: int | None) -> Iterator[str]:
    """The run's writable directory, owned by the run's user: the caller's workspace (kept), or a fresh one
    (removed after the run)."""
    if workspace is None:
        path = tempfile.mkdtemp(prefix="orchestra-sandbox-")
    else:
        path = str(Path(workspace).resolve())
        os.makedirs(path, exist_ok=True)
        if uid is not None and not host.reachable_by_others(path):
            raise ConfigError(f"sandbox workspace {path}: the run's user cannot reach it; every parent directory "
                              "must be searchable by others (e.g. put it under /tmp)")
    if uid is not None:
        _hand_over(path, uid)
    try:
        yield path
    finally:
        if workspace is None:
            shutil.rmtree(path, ignore_errors=True)


def _hand_over(path: str, uid: int) -> None:
    """Give the workspace to this run's uid. Only entries the caller or an earlier run owns change hands, never
    through a symlink (lchown) and never a file with other hard links, so a planted link cannot hand a host file
    to the sandbox."""
    mine = os.geteuid()
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, n) for n in (*dirs, *files))):
            info = os.lstat(name)
            ours = info.st_uid == mine or host.UID_BASE <= info.st_uid < host.UID_BASE + host.UID_SPAN
            if ours and (stat.S_ISDIR(info.st_mode) or info.st_nlink == 1):
                os.lchown(name, uid, uid)
