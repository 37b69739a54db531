"""The seccomp deny-list, compiled once per process into a BPF program that the launcher loads.

Compiling here (with `pyseccomp`, over the system libseccomp) rather than in the sandbox keeps each run's start
fast: the launcher only hands the finished program to the kernel (`prctl(PR_SET_SECCOMP)`), so it needs neither
pyseccomp nor libseccomp. libseccomp checks the architecture first and kills a process that makes syscalls of
another ABI (e.g. 32-bit `int 0x80`), so the numbers below cannot be sidestepped.

Denied with an errno (code sees an ordinary OSError): sockets of any family but AF_UNIX (no network, even where
there is no network namespace); namespaces (unshare, setns, clone with CLONE_NEW*; clone3 is made to look absent so
libc falls back to clone, whose flags can be checked); ptrace and cross-process memory access; io_uring (its
operations would bypass this filter); mount and friends, kernel keyrings, modules, BPF, perf, reboot, clocks, swap;
and setsid/setpgid, so every process the code starts stays in the run's process group and dies with it.
"""

from __future__ import annotations

import errno
import functools
import socket
import tempfile

from orchestra.errors import ConfigError

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "unshare",
    "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "userfaultfd", "acct",
    "quotactl", "open_by_handle_at", "name_to_handle_at", "settimeofday", "clock_settime", "adjtimex",
    "sethostname", "setdomainname", "iopl", "ioperm", "syslog", "fanotify_init", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "setsid", "setpgid", "mount_setattr", "open_tree", "move_mount",
    "fsopen", "fsmount", "fsconfig", "fspick",
)
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                         0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME


@functools.cache
def filter_program() -> bytes:
    """The deny-list as a BPF program (`struct sock_filter` array) for this machine's architecture."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:
        raise ConfigError(f"the sandbox's seccomp layer needs pyseccomp and the system libseccomp "
                          f"(pip install pyseccomp; apt-get install libseccomp2): {exc}") from None
    rules = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture
    rules.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    for flag in CLONE_NAMESPACE_FLAGS:
        rules.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()


def available() -> bool:
    try:
        filter_program()
    except ConfigError:
        return False
    return True
