"""RELIABILITY.md S1-S27 against the real sandbox, on both paths (bubblewrap and the fallback).

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import orchestra
from orchestra.errors import ConfigError
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
def nothing_left_running() -> Iterator[None]:
    before = set(_sandbox_processes())
    yield
    left = set(_sandbox_processes()) - before
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


def test_s12_subprocesses_are_confined_too(confined: str, open_dir: Path) -> None:
    target = open_dir / f"s12-{uuid.uuid4().hex[:8]}"
    with _Listener() as listener:
        code = f"""
import os, subprocess, sys
print('UID', subprocess.run(['id', '-u'], capture_output=True, text=True).stdout.strip())
print('SYSTEM', os.system('echo pwned > {target}'))
probe = "import socket; socket.create_connection(('127.0.0.1', {listener.port}), timeout=1)"
print('PYTHON', subprocess.run([sys.executable, '-c', probe], capture_output=True).returncode)
"""
        result = run(code, confined)
        assert result.status == "ok" and listener.accepted == 0
    assert "UID" in result.stdout and "SYSTEM" in result.stdout and "PYTHON 1" in result.stdout
    if os.geteuid() == 0:
        assert "UID 0" not in result.stdout
    assert not target.exists()


ESCAPES = {
    "s13_subclass_walk_to_popen": "import subprocess\n"
    "popen = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'Popen'][0]\n"
    "print('RAN', popen(['sh', '-c', 'echo x > {target}']).wait())\n",
    "s14_ctypes_system": "import ctypes\nprint('RAN', ctypes.CDLL(None).system(b'echo x > {target}'))\n",
    "s15_frame_builtins": "import sys\n"
    "print('RAN', sys._getframe().f_builtins['__import__']('os').system('echo x > {target}'))\n",
    "s16_importlib_and_sys_modules": "import importlib, sys\n"
    "print('RAN', importlib.import_module('os').system('echo x > {target}'),\n"
    "      sys.modules['posix'].system('echo x > {target}'))\n",
    "s17_exec_base64": "import base64\n"
    "exec(base64.b64decode({payload!r}))\n",
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_s13_to_s17_escape_tricks_have_no_effect_on_the_host(confined: str, open_dir: Path, case: str) -> None:
    import base64

    target = open_dir / case
    inner = f"try:\n    open({str(target)!r}, 'w').write('x')\nexcept OSError as exc:\n    print('RAN', exc.errno)\n"
    code = ESCAPES[case].format(target=target, payload=base64.b64encode(inner.encode()))
    result = run(code, confined)
    assert "RAN" in result.stdout, result.stderr
    assert not target.exists() and not list(open_dir.iterdir())


def test_s18_daemonized_children_die_with_the_run(backend: str) -> None:
    marker = f"37.{uuid.uuid4().int % 10**9}"
    code = f"""
import os, subprocess, time
os.system('nohup sleep {marker} >/dev/null 2>&1 &')
try:
    subprocess.Popen(['sleep', '{marker}'], start_new_session=True)
except OSError as exc:
    print('SETSID REFUSED', exc.errno)
if os.fork() == 0:
    try:
        os.setsid()
    except OSError:
        pass
    if os.fork() == 0:
        os.execvp('sleep', ['sleep', '{marker}'])
    os._exit(0)
time.sleep(0.6)
print('STARTED')
"""
    seen: list[int] = []
    watcher = threading.Thread(target=lambda: seen.extend(_wait_for_marker(marker, within_s=2.0)))
    watcher.start()
    result = run(code, backend)
    watcher.join()
    assert result.status == "ok" and "STARTED" in result.stdout
    assert seen, "the daemonized children never ran"
    assert not _marked(marker)


def test_s19_child_ignoring_sigterm_is_killed(backend: str) -> None:
    marker = f"41.{uuid.uuid4().int % 10**9}"
    code = f"""
import signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(['sh', '-c', 'trap "" TERM; sleep {marker}'])
time.sleep(60)
"""
    limits = SandboxLimits(wall_s=1.0, memory_mib=256, processes=32, grace_s=1.0)
    result = run(code, backend, limits)
    assert result.status == "timeout" and result.duration_s <= limits.wall_s + 2.0
    assert not _marked(marker)


def test_s20_ten_thousand_threads_stop_cleanly_at_the_cap(backend: str) -> None:
    code = """
import threading, time
started = []
try:
    for _ in range(10_000):
        t = threading.Thread(target=time.sleep, args=(3,), daemon=True)
        t.start()
        started.append(t)
except (RuntimeError, MemoryError) as exc:
    print('STOPPED', len(started), type(exc).__name__)
"""
    limits = SandboxLimits(wall_s=2.0, memory_mib=512, processes=32)  # memory for 32 stacks: the cap stops it
    result = run(code, backend, limits)
    assert result.status == "ok" and "STOPPED" in result.stdout and "RuntimeError" in result.stdout
    assert limits.processes - 4 <= int(result.stdout.split()[1]) < limits.processes


def test_s21_hundred_thousand_descriptors_stop_at_the_cap(backend: str) -> None:
    code = """
import os
fds = []
try:
    for _ in range(100_000):
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as exc:
    print('STOPPED', len(fds), exc.errno)
"""
    result = run(code, backend)
    assert result.status == "ok" and "STOPPED" in result.stdout and result.stdout.split()[2] == "24"
    assert int(result.stdout.split()[1]) < SMALL.open_files


def test_s23_one_runs_files_are_invisible_to_the_next(backend: str) -> None:
    write = """
import os, tempfile
for path in ('note', os.path.join(tempfile.gettempdir(), 'note'), os.path.expanduser('~/note')):
    try:
        open(path, 'w').write('s23-secret')
        print('WROTE', path)
    except OSError as exc:
        print('REFUSED', path, exc.errno)
"""
    first = run(write, backend)
    assert first.status == "ok" and "WROTE note" in first.stdout
    read = """
import os, tempfile
print('CWD', sorted(os.listdir('.')))
for path in ('note', os.path.join(tempfile.gettempdir(), 'note'), os.path.expanduser('~/note')):
    try:
        print('FOUND', open(path).read())
    except OSError:
        print('ABSENT', path)
"""
    second = run(read, backend)
    assert second.status == "ok" and "CWD []" in second.stdout
    assert "s23-secret" not in second.stdout and second.stdout.count("ABSENT") == 3


def test_s25_binary_and_control_output_is_escaped(backend: str) -> None:
    code = ("import sys\n"
            "sys.stdout.buffer.write(b'a\\x00b \\xff\\xfe \\x1b[31mred\\x1b[0m \\r\\n')\n"
            "sys.stderr.buffer.write(b'\\x00\\x1b]0;title\\x07')\n")
    result = run(code, backend)
    assert result.status == "ok"
    assert result.stdout == "a\\x00b \\xff\\xfe \\x1b[31mred\\x1b[0m \\x0d\n"
    assert result.stderr == "\\x00\\x1b]0;title\\x07"


def test_s27_thirty_two_concurrent_runs_are_all_correct(backend: str) -> None:
    code = "import sys\nn = {n}\nprint(n, sum(i * i for i in range(n)))\n"
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda n: run(code.format(n=n), backend, SandboxLimits(wall_s=20.0)),
                                range(1000, 1032)))
    for n, result in zip(range(1000, 1032), results, strict=True):
        assert result.status == "ok", result
        assert result.stdout == f"{n} {sum(i * i for i in range(n))}\n"


def test_persistent_workspace_keeps_files_between_runs(backend: str, open_dir: Path) -> None:
    assert run("open('state.txt', 'w').write('42')", backend, workspace=open_dir).status == "ok"
    second = run("print(open('state.txt').read())", backend, workspace=open_dir)
    assert second.stdout == "42\n" and (open_dir / "state.txt").read_text() == "42"


def test_workspace_links_never_hand_a_host_file_to_the_sandbox(backend: str, open_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands the workspace to a run's own user")
    outside = Path(f"/tmp/orchestra-test-host-{uuid.uuid4().hex[:8]}")
    outside.write_text("host")
    try:
        (open_dir / "soft").symlink_to(outside)
        os.link(outside, open_dir / "hard")
        result = run("print(open('hard').read())\nopen('hard', 'w').write('pwned')", backend, workspace=open_dir)
        assert result.status == "error" and "PermissionError" in result.stderr
        assert outside.stat().st_uid == 0 and outside.read_text() == "host"
    finally:
        outside.unlink()


def test_setup_failure_is_an_error_result_not_an_exception(backend: str) -> None:
    result = run("print('never')", backend, SandboxLimits(wall_s=2.0, memory_mib=64, processes=32))
    assert result.status in ("ok", "error")
    if result.status == "error":  # 64 MiB may be too little for some interpreters: then it says so
        assert "never" not in result.stdout and result.message


def test_bad_limits_and_backend_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="wall_s"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ConfigError, match="grace_s"):
        SandboxLimits(grace_s=5)
    with pytest.raises(ConfigError, match="backend"):
        run_python("print(1)", backend="docker")  # type: ignore[arg-type]


def test_unreachable_workspace_is_a_config_error() -> None:
    if os.geteuid() != 0:
        pytest.skip("only a run with its own user can be denied the caller's directory")
    with pytest.raises(ConfigError, match="workspace"):
        run_python("print(1)", SMALL, workspace=Path.home() / f"orchestra-ws-{uuid.uuid4().hex[:8]}",
                   backend="fallback")


# helpers

def _layers(backend: str) -> tuple[str, ...]:
    return run_python("pass", SMALL, backend=backend).layers  # type: ignore[arg-type]


def _sandbox_processes() -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                uid = os.stat(entry.path).st_uid
            except OSError:
                continue
            if host.UID_BASE <= uid < host.UID_BASE + host.UID_SPAN:
                state = Path(entry.path, "stat").read_text().rsplit(")", 1)[-1].split()[0] \
                    if Path(entry.path, "stat").exists() else "?"
                if state != "Z":
                    found.append(int(entry.name))
    return found


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


