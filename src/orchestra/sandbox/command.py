"""The command line, environment and working directory of one sandboxed run, shared by both paths.

The environment is built from nothing (never copied from the host): API keys and every other host variable stay
out. The launcher gets its settings as one argument (marshal, hex-encoded) and the code on stdin, so the code never
appears in a process listing or on disk.
"""

from __future__ import annotations

import functools
import marshal
from dataclasses import dataclass
from pathlib import Path

from orchestra.sandbox.host import Interpreter
from orchestra.sandbox.limits import MIB, SandboxLimits


@dataclass(frozen=True, slots=True)
class Command:
    """Everything `subprocess.Popen` needs for one run, plus the layers it provides (for the result)."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    layers: tuple[str, ...]


@functools.cache
def launcher_source() -> str:
    return Path(__file__).with_name("launcher.py").read_text()


def launcher_argv(interp: Interpreter, limits: SandboxLimits, *, processes: int,
                  landlock: dict[str, list[str]] | None, seccomp: bytes | None) -> tuple[str, ...]:
    """`python -I -S -B -c <launcher> <config>`: isolated mode, no site hooks, no bytecode written."""
    config = {
        "sys_path": list(interp.site_paths),
        "landlock": landlock,
        "seccomp": seccomp,
        "rlimits": {
            "RLIMIT_AS": limits.memory_mib * MIB,
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_FSIZE": limits.file_mib * MIB,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_NPROC": processes,
            "RLIMIT_CORE": 0,
        },
    }
    return (interp.python, "-I", "-S", "-B", "-c", launcher_source(), marshal.dumps(config).hex())


def scrubbed_env(*, home: str, tmpdir: str) -> dict[str, str]:
    """The whole environment of sandboxed code: nothing inherited from the host."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmpdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # glibc reserves 64 MiB of address space per thread arena; under RLIMIT_AS that would make a few threads
        # look like an out-of-memory run. Two arenas keep the address-space limit close to real memory use.
        "MALLOC_ARENA_MAX": "2",
    }
