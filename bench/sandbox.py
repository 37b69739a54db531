"""Start overhead of the code sandbox: `run_python` on each path against a plain `subprocess.run` of the same code.

The peer is what a caller without a sandbox would do: `subprocess.run([sys.executable, "-c", code])` with its
output captured. Ours is `orchestra.sandbox.run_python(code)` with default limits, which adds: the host checks
(cached after the first call), a fresh workdir (and, under root, a fresh uid and its ownership), the launcher
(rlimits, landlock, seccomp; `pyseccomp` import), bubblewrap's namespaces and mounts on that path, the capped output
readers and the clean-up sweep. The code is trivial (`print(sum(range(1000)))`), so the difference is all overhead.
Runs alternate between the three, after `--warmup` untimed runs each; the machine is shared, so p50 is the figure.

Usage: `python bench/sandbox.py [--runs 40] [--warmup 3]`. The last line printed is
`ratio=<ours p50 (the path run_python picks here) / plain subprocess p50>`; the target is <= 100 ms p50 added.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from orchestra.sandbox import run_python
from orchestra.sandbox.host import bwrap_works
from orchestra.sandbox.runner import choose_backend

CODE = "print(sum(range(1000)))"
EXPECTED = "499500\n"


def plain() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert done.stdout == EXPECTED


def sandboxed(backend: str) -> None:
    result = run_python(CODE, backend=backend)  # type: ignore[arg-type]
    assert result.ok and result.stdout == EXPECTED, result


def main(args: argparse.Namespace) -> float:
    paths = ["bwrap", "fallback"] if bwrap_works() else ["fallback"]
    contenders = {"plain subprocess": plain, **{f"sandbox ({p})": (lambda p=p: sandboxed(p)) for p in paths}}
    for run in contenders.values():
        for _ in range(args.warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["plain subprocess"])
    print(f"{'':20} {'p50 ms':>8} {'p90 ms':>8} {'added p50 ms':>13}")
    for name, samples in times.items():
        p50, p90 = statistics.median(samples), statistics.quantiles(samples, n=10)[-1]
        print(f"{name:20} {p50 * 1e3:8.1f} {p90 * 1e3:8.1f} {(p50 - base) * 1e3:13.1f}")
    ours = statistics.median(times[f"sandbox ({choose_backend('auto')})"])
    return ours / base


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    ratio = main(parser.parse_args())
    print(f"ratio={ratio:.2f}")
