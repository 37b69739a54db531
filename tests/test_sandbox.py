"""RELIABILITY.md S1-S11 (limits, filesystem, secrets, network) against the real sandbox, on both paths
(bubblewrap and the fallback); S12-S27 are in tests/test_sandbox_escape.py, which shares these fixtures.

Every run goes through `run`, which asserts the structured status came back within the wall limit + 2 s; the
autouse fixture asserts that no process of any sandbox run outlives its test. Limits are small (1-2 s, 256 MiB,
32 processes) so the file runs in seconds. Probes that must fail inside the sandbox print a marker either way, and
each test asserts the marker of the attempt, so a test cannot pass because its probe never ran.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import orchestra
from orchestra.sandbox import SandboxLimits, SandboxResult, host, run_python

REPO = Path(orchestra.__file__).resolve().parents[2]
SMALL = SandboxLimits(wall_s=2.0, memory_mib=256, processes=32, file_mib=8, open_files=256,
                      output_bytes=64 * 1024, grace_s=0.5)


@pytest.fixture(params=["bwrap", "fallback"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "bwrap" and not host.bwrap_works():
        pytest.skip("bubblewrap is not installed here (apt-get install bubblewrap)")
    return request.param


@pytest.fixture
def confined(backend: str) -> str:
    """The backend, for tests of filesystem confinement: on the fallback path that guarantee comes from landlock,
    so a kernel without it cannot give it (docs/sandbox.md states what holds there instead)."""
    if backend == "fallback" and not host.landlock_abi():
        pytest.skip("this kernel has no landlock: the fallback path cannot confine the filesystem here")
    return backend


@pytest.fixture(autouse=True)
def nothing_left_running(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """After each test, no process of any uid its runs were given is alive (only this test's uids: other test
    sessions on the machine may be running sandboxes of their own)."""
    allocated: list[int] = []
    allocate = host.allocate_uid

    def recording() -> int:
        allocated.append(allocate())
        return allocated[-1]

    monkeypatch.setattr(host, "allocate_uid", recording)
    yield
    left = {uid: pids for uid in allocated if (pids := host.processes_of(uid))}
    assert not left, f"sandbox processes outlived the test: {left}"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A host directory everyone may read and write: only the sandbox's own layers can keep code out of it."""
    path = Path(f"/tmp/orchestra-test-{uuid.uuid4().hex[:12]}")
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if not child.is_dir() or child.is_symlink() else child.rmdir()
    path.rmdir()


def run(code: str, backend: str, limits: SandboxLimits = SMALL, **kwargs: object) -> SandboxResult:
    started = time.monotonic()
    result = run_python(code, limits, backend=backend, **kwargs)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert result.backend == backend
    assert elapsed <= limits.wall_s + 2.0, f"no result within the limit + 2 s ({elapsed:.2f} s)"
    return result


def test_s1_busy_loop_times_out_at_the_wall_limit(backend: str) -> None:
    limits = SandboxLimits(wall_s=1.0, memory_mib=256, processes=32)
    result = run("while True:\n    pass\n", backend, limits)
    assert result.status == "timeout" and "wall-clock" in result.message
    assert 1.0 <= result.duration_s <= 2.0


def test_s2_fork_bomb_hits_the_process_cap_and_nothing_survives(backend: str) -> None:
    if os.geteuid() == 0:
        assert "own-user" in _layers(backend), "under root the process cap needs the run's own user"
    limits = SandboxLimits(wall_s=1.5, memory_mib=128, processes=16)
    result = run("import os\nwhile True:\n    os.fork()\n", backend, limits)
    assert result.status in ("timeout", "error")
    assert "Resource temporarily unavailable" in result.stderr  # the cap, not the clock, stopped the forks


def test_s3_growing_allocation_gives_memory_status(backend: str) -> None:
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n", backend)
    assert result.status == "memory" and "256 MiB" in result.message


def test_s4_huge_string_is_a_memory_error_inside(backend: str) -> None:
    result = run("x = 'x' * 10**10\n", backend)
    assert result.status == "memory" and "MemoryError" in result.stderr


def test_s5_output_is_capped_and_flagged(backend: str) -> None:
    result = run("import sys\nsys.stdout.write('x' * 100 * 2**20)\nprint('done', file=sys.stderr)\n", backend)
    assert result.status == "ok" and result.stdout_truncated and not result.stderr_truncated
    assert result.stdout == "x" * SMALL.output_bytes and result.stderr == "done\n"


def test_s6_huge_file_is_stopped_by_the_file_size_limit(backend: str, open_dir: Path) -> None:
    code = ("with open('big', 'wb') as f:\n"
            "    for _ in range(10 * 1024):\n"
            "        f.write(b'\\0' * 2**20)\n")
    result = run(code, backend, workspace=open_dir)
    assert result.status == "error" and "File too large" in result.stderr
    assert (open_dir / "big").stat().st_size <= SMALL.file_mib * 2**20


def test_s7_writes_outside_the_workdir_are_refused_and_the_host_is_unchanged(confined: str, open_dir: Path) -> None:
    tag = uuid.uuid4().hex[:12]
    targets = [Path("/etc") / f"s7-{tag}", Path.home() / ".ssh" / f"s7-{tag}", REPO / f"s7-{tag}",
               open_dir / f"s7-{tag}"]
    code = f"""
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, 'w').write('pwned')
        print('WROTE', path)
    except OSError as exc:
        print('REFUSED', path, exc.errno)
open('inside', 'w').write('ok')
print('INSIDE', open('inside').read())
"""
    result = run(code, confined)
    assert result.status == "ok" and "INSIDE ok" in result.stdout
    assert result.stdout.count("REFUSED") == len(targets) and "WROTE" not in result.stdout
    assert not any(t.exists() for t in targets)


def test_s8_host_secrets_are_absent(confined: str, open_dir: Path) -> None:
    canary = f"secret-{uuid.uuid4().hex}"
    (open_dir / ".aws").mkdir(mode=0o755)
    for name in (".env", ".aws/credentials"):
        (open_dir / name).write_text(f"KEY={canary}\n")
        (open_dir / name).chmod(0o644)
    (open_dir / ".aws").chmod(0o755)
    assert host.reachable_by_others(str(open_dir / ".env"))  # only the sandbox, not file modes, keeps it out
    paths = [open_dir / ".env", open_dir / ".aws/credentials", Path.home() / ".aws/credentials",
             REPO / "pyproject.toml", Path("/proc/1/environ")]
    code = f"""
for path in {[str(p) for p in paths]!r}:
    try:
        print('READ', path, open(path, 'rb').read()[:200])
    except OSError as exc:
        print('ABSENT', path, exc.errno)
"""
    result = run(code, confined)
    assert result.status == "ok" and canary not in result.stdout
    for p in paths[:4]:
        assert f"ABSENT {p}" in result.stdout
    try:  # bwrap shows the sandbox's own pid 1 (scrubbed environment); it must never be the host's
        host_init_env = repr(Path("/proc/1/environ").read_bytes()[:200])
    except PermissionError:
        host_init_env = None
    assert "ABSENT /proc/1/environ" in result.stdout or (
        confined == "bwrap" and (host_init_env is None or host_init_env not in result.stdout))


def test_s9_environment_holds_no_api_keys(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = f"sk-canary-{uuid.uuid4().hex}"
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, canary)
    code = """
import os, subprocess
print(sorted(os.environ.items()))
print(subprocess.run(['env'], capture_output=True, text=True).stdout)
try:
    print(open('/proc/self/environ', 'rb').read())
except OSError as exc:
    print('no /proc', exc.errno)
"""
    result = run(code, backend)
    assert result.status == "ok" and "'PATH'" in result.stdout and "LANG=C.UTF-8" in result.stdout
    assert canary not in result.stdout + result.stderr and "API_KEY" not in result.stdout


def test_s10_no_tcp_and_no_dns(backend: str) -> None:
    code = """
import socket, time
started = time.monotonic()
for probe in (lambda: socket.create_connection(('1.1.1.1', 80), timeout=3),
              lambda: socket.getaddrinfo('example.com', 80)):
    try:
        probe()
        print('CONNECTED')
    except OSError as exc:
        print('FAILED', type(exc).__name__)
print('SECONDS', time.monotonic() - started)
"""
    result = run(code, backend, SandboxLimits(wall_s=6.0, memory_mib=256, processes=32))
    assert result.status == "ok" and result.stdout.count("FAILED") == 2 and "CONNECTED" not in result.stdout
    assert float(result.stdout.split("SECONDS")[1]) < 5.0


def test_s11_host_loopback_servers_are_unreachable(backend: str) -> None:
    with _Listener() as listener:
        socket.create_connection(("127.0.0.1", listener.port), timeout=2).close()  # the server is real
        assert listener.wait_for(1)
        code = f"""
import socket
for family, address in ((socket.AF_INET, ('127.0.0.1', {listener.port})),
                        (socket.AF_INET6, ('::1', {listener.port}))):
    try:
        socket.socket(family, socket.SOCK_STREAM).connect(address)
        print('CONNECTED')
    except OSError as exc:
        print('FAILED', exc.errno)
"""
        result = run(code, backend)
        time.sleep(0.1)
        assert result.status == "ok" and result.stdout.count("FAILED") == 2
        assert listener.accepted == 1, "the sandbox reached the host's server"


# helpers

def _layers(backend: str) -> tuple[str, ...]:
    return run_python("pass", SMALL, backend=backend).layers  # type: ignore[arg-type]


def _marked(marker: str) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return [p for p in pids if p != os.getpid()]


def _wait_for_marker(marker: str, *, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pids := _marked(marker):
            return pids
        time.sleep(0.02)
    return []


class _Listener:
    """A real TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def wait_for(self, count: int) -> bool:
        deadline = time.monotonic() + 2
        while self.accepted < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.accepted >= count


