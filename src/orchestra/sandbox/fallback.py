"""The fallback path, when bubblewrap is absent or cannot build namespaces here: the launcher as a plain process.

Layers: the run's own user (when orchestra runs as root), rlimits, a seccomp deny-list (no socket but Unix
sockets, no namespaces, no ptrace, no setsid/setpgid so the process group holds every descendant), and landlock
when the kernel has it: read-only access to the system directories, the interpreter and site-packages only (no
/proc, no home, no repository), writes only inside the workdir, TCP bind/connect denied, signals and abstract Unix
sockets scoped to the run. Without landlock the filesystem is guarded only by the run's user and file permissions;
`docs/sandbox.md` states exactly what each combination guarantees.
"""

from __future__ import annotations

from orchestra.sandbox.command import Command, launcher_argv, scrubbed_env
from orchestra.sandbox.host import Interpreter, landlock_abi
from orchestra.sandbox.limits import SandboxLimits
from orchestra.sandbox.seccomp import filter_program

_READ_ONLY = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
              "/etc/localtime", "/etc/alternatives", "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
              "/dev/urandom")


def fallback_command(interp: Interpreter, workdir: str, limits: SandboxLimits, *, processes: int) -> Command:
    abi = landlock_abi()
    landlock = None
    if abi:
        landlock = {"read": [*_READ_ONLY, interp.prefix, *interp.site_paths], "write": [workdir, "/dev/null"]}
    argv = launcher_argv(interp, limits, processes=processes, landlock=landlock, seccomp=filter_program())
    layers = ("rlimits", "seccomp", *((f"landlock-abi{abi}",) if abi else ()), "process-group", "scrubbed-env")
    return Command(argv, scrubbed_env(home=workdir, tmpdir=workdir), workdir, layers)
