"""The launcher: the first code to run inside a sandbox, as `python -I -S -B -c <this file's text> <config>`.

It reads its settings (argv[1]: a `marshal`led dict, hex-encoded; marshal is built in, so reading it imports
nothing) and the model's code from stdin, applies every in-process layer, then runs the code in a fresh `__main__`:
  rlimits (address space, CPU, processes, file size, open files, no core) -> no_new_privs -> landlock (fallback
  path: read-only allow-list, writes only in the workdir, no TCP, signals and abstract sockets scoped) -> seccomp
  deny-list (compiled by the parent in `orchestra.sandbox.seccomp`; loaded here with one prctl).
All of these survive fork and exec, so every process the code starts is under the same layers. A layer that was
asked for and cannot be applied stops the run before the code starts (exit `SETUP_EXIT`): the sandbox fails closed.

Self-contained by design: it is passed as source text, so it imports only the standard library; the config's
`sys_path` (this environment's site-packages) is for the code. Exit codes: the code's own; 1 for an uncaught exception;
`MEMORY_EXIT` for an uncaught MemoryError; `SETUP_EXIT` when the sandbox could not be built.
"""

import ctypes
import marshal
import os
import resource
import struct
import sys

MEMORY_EXIT = 86
SETUP_EXIT = 87

_LANDLOCK_CREATE, _LANDLOCK_ADD, _LANDLOCK_RESTRICT = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV


def main():
    config = marshal.loads(bytes.fromhex(sys.argv[1]))
    source = sys.stdin.buffer.read()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.path.extend(config["sys_path"])
    try:
        apply_rlimits(config["rlimits"])
        _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: required by landlock and seccomp
        if config["landlock"] is not None:
            apply_landlock(config["landlock"])
        if config["seccomp"] is not None:
            apply_seccomp(config["seccomp"])
    except Exception as exc:  # noqa: BLE001 - any failure to build the sandbox stops the run, with its reason
        sys.stderr.write(f"sandbox setup failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_EXIT)
    run(source)


def apply_rlimits(limits):
    """Set soft = hard (the code cannot raise them back), except CPU: SIGXCPU first, SIGKILL one second later."""
    for name, value in limits.items():
        which = getattr(resource, name)
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(which, (value, hard))


def apply_landlock(config):
    """Restrict the filesystem to `read` (read and execute) and `write` (everything) paths; deny TCP bind and
    connect; on ABI >= 6, scope signals and abstract Unix sockets to the sandbox."""
    libc = _libc()
    abi = libc.syscall(_LANDLOCK_CREATE, None, 0, 1)
    if abi < 1:
        raise OSError(ctypes.get_errno(), "landlock is not available")
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    handled |= _FS_IOCTL_DEV if abi >= 5 else 0
    net = 0b11 if abi >= 4 else 0
    scoped = 0b11 if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("QQQ", handled, net, scoped)[:size], size)
    ruleset = libc.syscall(_LANDLOCK_CREATE, attr, size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    for paths, access in ((config["read"], read), (config["write"], handled)):
        for path in paths:
            _landlock_allow(libc, ruleset, path, access & handled)
    if libc.syscall(_LANDLOCK_RESTRICT, ruleset, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


def _landlock_allow(libc, ruleset, path, access):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            access &= _FILE_RIGHTS
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
        if libc.syscall(_LANDLOCK_ADD, ruleset, 1, rule, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)


def apply_seccomp(program):
    """Load the deny-list compiled by the parent (`orchestra.sandbox.seccomp`): a `struct sock_filter` array."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    fprog = SockFprog(len(program) // 8, program)
    if _libc().prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter was refused")


def run(source):
    """Run the code as `__main__`; uncaught exceptions print as Python would, without the launcher's frames."""
    import builtins

    module = type(sys)("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = ["<code>"]
    sys.stdout.reconfigure(line_buffering=True)  # output written before a timeout still comes back
    try:
        exec(compile(source, "<code>", "exec"), module.__dict__)
    except MemoryError:
        module.__dict__.clear()
        sys.stdout.flush()
        sys.stderr.write("MemoryError: the code exceeded its memory limit\n")
        sys.stderr.flush()
        os._exit(MEMORY_EXIT)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - reported to the caller like an uncaught exception
        import traceback  # only now: importing it costs every run a few milliseconds

        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        sys.exit(1)


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


if __name__ == "__main__":
    main()
