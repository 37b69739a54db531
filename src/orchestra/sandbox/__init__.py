"""Run model-written Python in a sandbox: bubblewrap when it works here, otherwise a process with its own user,
rlimits, seccomp and landlock; always a wall-clock timeout that kills every process of the run. See
docs/sandbox.md for the threat model and what each path guarantees."""

from orchestra.sandbox.limits import SandboxLimits, SandboxResult, Status
from orchestra.sandbox.runner import run_python

__all__ = ["SandboxLimits", "SandboxResult", "Status", "run_python"]
