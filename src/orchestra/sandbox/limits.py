"""The sandbox's records: the limits one run gets and the result it gives back.

Invariants: every limit is positive and bounded (a `ConfigError` names the field otherwise); a result always has one
status from `Status`, output already capped and escaped (printable text: no NUL, no ANSI escapes, valid UTF-8), and
the wall seconds the run used, which is what the code interpreter is billed for.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from orchestra.errors import ConfigError

Status = Literal["ok", "timeout", "memory", "error", "killed"]
"""ok: exited 0. timeout: passed the wall or CPU limit. memory: passed the address-space limit.
error: exited non-zero (an exception, a refused operation) or the sandbox could not be built.
killed: ended by a signal the sandbox did not send (a crash, or a kill from elsewhere)."""

Backend = Literal["auto", "bwrap", "fallback"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one run may use. The defaults suit a code-interpreter call; tests use much smaller ones."""

    wall_s: float = 10.0
    """Wall-clock limit; the whole process tree is killed when it passes (SIGTERM, then SIGKILL after grace_s)."""
    memory_mib: int = 512
    """Address-space limit per process (RLIMIT_AS)."""
    processes: int = 64
    """Processes and threads the run may have at once (RLIMIT_NPROC, for the run's own user)."""
    file_mib: int = 64
    """Largest file the run may write (RLIMIT_FSIZE)."""
    open_files: int = 256
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    output_bytes: int = 64 * 1024
    """Bytes kept of stdout and of stderr each; the rest is read and dropped, and the result says so."""
    tmp_mib: int = 64
    """Size of the private /tmp (bubblewrap path; the fallback has no /tmp but the workdir)."""
    grace_s: float = 0.5
    """Time between SIGTERM and SIGKILL after a timeout (at most 2 s)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ConfigError(f"sandbox limit {f.name} must be positive, got {value!r}")
        if self.wall_s > 3600:
            raise ConfigError(f"sandbox limit wall_s must be at most 3600 s, got {self.wall_s!r}")
        if self.grace_s > 2:
            raise ConfigError(f"sandbox limit grace_s must be at most 2 s, got {self.grace_s!r}")
        if self.memory_mib < 64:
            raise ConfigError(f"sandbox limit memory_mib must be at least 64 (Python needs it to start), "
                              f"got {self.memory_mib!r}")

    @property
    def cpu_s(self) -> int:
        """CPU-seconds limit: one more than the wall limit, so a single busy thread meets the wall limit first."""
        return int(self.wall_s) + 1


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one run did. `stdout`/`stderr` are capped at `output_bytes` each, then escaped for display."""

    status: Status
    exit_code: int | None
    """The code's exit status; None when it was killed by a signal."""
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: float
    """Wall seconds from start to the end of clean-up: what the run is billed for."""
    backend: Literal["bwrap", "fallback"]
    layers: tuple[str, ...]
    """The isolation layers this run had, e.g. ("bwrap", "rlimits", "seccomp", "own-user")."""
    message: str = ""
    """Why the status is not ok, in one line (empty when ok)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"
