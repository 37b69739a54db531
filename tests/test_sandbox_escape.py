"""RELIABILITY.md S12-S27 (escapes, daemons, caps, isolation between runs, output, concurrency) and the
workspace, on both sandbox paths; fixtures and helpers are shared with tests/test_sandbox.py."""
# ruff: noqa: F811 - the shared fixtures are imported, then named as test parameters (how pytest injects them)

from __future__ import annotations

import base64
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestra.errors import ConfigError
from orchestra.sandbox import SandboxLimits, host, run_python
from tests.test_sandbox import (  # noqa: F401 - fixtures are used by name
    SMALL,
    _Listener,
    _marked,
    _wait_for_marker,
    backend,
    confined,
    nothing_left_running,
    open_dir,
    run,
)


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


def test_a_layer_that_cannot_be_applied_stops_the_run_before_the_code() -> None:
    if not host.landlock_abi():
        pytest.skip("needs landlock (the fallback's layer that opens descriptors)")
    limits = SandboxLimits(wall_s=2.0, memory_mib=256, processes=32, open_files=1)  # landlock needs a descriptor
    result = run("print('never')", "fallback", limits)
    assert result.status == "error" and result.message.startswith("sandbox setup failed")
    assert "never" not in result.stdout


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
