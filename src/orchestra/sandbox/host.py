"""Facts about the host the sandbox runs on, found once per process: which interpreter the sandbox runs, whether
runs get their own user, which kernel layers exist; plus the per-run user ids and the sweep that kills a run's
processes.

Own user per run: when orchestra runs as root, every run executes as a fresh unprivileged uid (never a real
account, never reused while a run holds it). That is what makes RLIMIT_NPROC count only the run's processes (the
kernel never applies it to uid 0), stops the code from writing or signalling anything the host owns, and lets the
sweep find every process of the run, even one that left its process group. A non-root caller runs the sandbox as
itself; then the process cap counts all of that user's processes (see docs/sandbox.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from orchestra.errors import ConfigError

UID_BASE = 1_500_000_000
"""Run uids are UID_BASE + [0, 2**24): far above any real account."""
UID_SPAN = 1 << 24
PYTHON_ENV = "ORCHESTRA_SANDBOX_PYTHON"

_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Interpreter:
    """The Python the sandbox runs and what it must be able to read."""

    python: str
    prefix: str
    """Its installation (standard library), bound or allowed read-only."""
    site_paths: tuple[str, ...]
    """This environment's site-packages, appended to the sandbox's sys.path (no .pth files run)."""


def drops_user() -> bool:
    """Whether runs get their own uid: only root may switch to one."""
    return os.geteuid() == 0


@functools.cache
def interpreter() -> Interpreter:
    """The interpreter for sandboxed code: this process's own when the run's user can reach it, else the system
    Python of the same minor version (same ABI, so this environment's packages still import)."""
    override = os.environ.get(PYTHON_ENV)
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [override] if override else [os.path.realpath(sys.executable), f"/usr/bin/{minor}"]
    site = tuple(dict.fromkeys(p for p in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))
                               if p and os.path.isdir(p) and _reachable(p)))
    for python in candidates:
        if python and os.path.isfile(python) and _reachable(python):
            real = os.path.realpath(python)
            return Interpreter(real, str(Path(real).parent.parent), site)
    raise ConfigError(
        f"no Python interpreter the sandbox user can run (tried {', '.join(c for c in candidates if c)}); "
        f"install {minor} under /usr/bin or set {PYTHON_ENV} to a world-readable interpreter"
    )


def _reachable(path: str) -> bool:
    """Whether the run's user can read `path`: this process itself, or under root an unrelated user."""
    return reachable_by_others(path) if drops_user() else os.access(path, os.R_OK)


def reachable_by_others(path: str) -> bool:
    """Whether an unrelated unprivileged user can reach `path`: every parent searchable, and the file readable
    (a directory: searchable)."""
    p = Path(os.path.realpath(path))
    for parent in p.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(p).st_mode
    return bool(mode & (stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH))


@functools.cache
def landlock_abi() -> int:
    """The kernel's landlock ABI version (0 when landlock is absent or disabled)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(int(libc.syscall(444, None, 0, 1)), 0)


@functools.cache
def bwrap_works() -> bool:
    """Whether bubblewrap is installed and can build a sandbox here, as the user runs will have."""
    path = shutil.which("bwrap")
    if path is None:
        return False
    uid = allocate_uid() if drops_user() else None
    try:
        done = subprocess.run(
            [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
            capture_output=True, timeout=10, **user_kwargs(uid))
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        release_uid(uid)
    return done.returncode == 0


def allocate_uid() -> int:
    """A uid no other run of this process holds; random across processes, so clashes are vanishingly rare."""
    with _uids_lock:
        while True:
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int | None) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)  # type: ignore[arg-type]


def user_kwargs(uid: int | None) -> dict[str, object]:
    """Popen arguments that start the child as `uid` with no supplementary groups (set before exec, in C)."""
    if uid is None:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def processes_of(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid` (read from /proc/PID/status, which, unlike the owner
    of /proc/PID, a process cannot hide by making itself non-dumpable)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "status").read_text()
        except OSError:
            continue
        uid_line = text[text.find("\nUid:") + 5:].split(None, 1)
        state = text[text.find("\nState:") + 7:].split(None, 1)
        if uid_line[:1] == [str(uid)] and state[:1] != ["Z"]:
            found.append(int(entry.name))
    return found


def kill_user(uid: int, *, within_s: float = 1.0) -> int:
    """SIGKILL every process of `uid` until none is left (a fork racing the sweep is caught on the next pass).
    Returns how many were still alive at the deadline (0 on success)."""
    deadline = time.monotonic() + within_s
    while True:
        pids = processes_of(uid)
        if not pids or time.monotonic() > deadline:
            return len(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def user_process_count() -> int:
    """Processes (threads included) this user has now: the base a non-root run's process cap is added to."""
    uid = str(os.geteuid())
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                lines = Path(entry.path, "status").read_text().splitlines()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in lines if ":" in line)
            if fields.get("Uid", "").split()[:1] == [uid]:
                count += int(fields.get("Threads", "1"))
    return count
