"""The bubblewrap path: the launcher inside new user, pid, network, ipc, uts and cgroup namespaces.

What the code sees: the system directories and the interpreter read-only, this environment's site-packages
read-only, a private /tmp (tmpfs of `tmp_mib`), its own /proc and a minimal /dev, and the run's workdir at
/workspace, the only writable host directory. No network interface but its own loopback; the host's 127.0.0.1 is
another namespace. The root is remounted read-only, so nothing outside /tmp and /workspace takes a write.
bwrap runs as the run's own user, and `--die-with-parent` plus the pid namespace mean that
when bwrap dies every process inside dies with it.
"""

from __future__ import annotations

import os
import shutil

from orchestra.sandbox.command import Command, launcher_argv, scrubbed_env
from orchestra.sandbox.host import Interpreter
from orchestra.sandbox.limits import MIB, SandboxLimits

WORKSPACE = "/workspace"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")


def bwrap_command(interp: Interpreter, workdir: str, limits: SandboxLimits, *, seccomp: bytes | None) -> Command:
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", "sandbox"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        argv += ["--ro-bind-try", path, path]
    for path in dict.fromkeys((interp.prefix, *interp.site_paths)):
        if not path.startswith("/usr/"):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmp_mib * MIB), "--tmpfs", "/tmp",
             "--bind", workdir, WORKSPACE, "--remount-ro", "/", "--chdir", WORKSPACE, "--"]
    argv += launcher_argv(interp, limits, processes=limits.processes, landlock=None, seccomp=seccomp)
    layers = ("bwrap", "rlimits", *(("seccomp",) if seccomp is not None else ()), "scrubbed-env")
    return Command(tuple(argv), scrubbed_env(home=WORKSPACE, tmpdir="/tmp"), workdir, layers)
