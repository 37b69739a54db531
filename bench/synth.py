"""Procedural synthesis speed: tasks/s over the 10 shared ToolScale domains, against golden-replay verification.

(a) generation: `orchestra.synth.procedural.synthesize` over ../shared/data/toolscale_domains (N tasks spread over
    the 10 domains): schema inference, tool derivation, drafting, verifying every draft by replaying its golden
    actions, writing the folders;
(b) the peer, measured in the same run: `orchestra env check tau` on every written folder (`check_domain`: load the
    folder as a τ² environment with its derived tools, replay each task's initial state and golden actions).
Both are timed end to end, per task. (b) is the cost floor of any generator whose tasks are checked by execution:
it does only the checking, on tasks that already exist.

Usage: `python bench/synth.py [--n 1000] [--seed 0] [--out DIR]`. The last line printed is
`ratio=<generation+verification s per task / golden-replay check s per task>`: how many times the cost of checking a
task it costs to make one (lower is better; 1 would mean generating is free).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from orchestra.envs.tau.env import check_domain  # noqa: E402
from orchestra.paths import shared_data  # noqa: E402
from orchestra.synth.procedural import synthesize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    source = shared_data() / "toolscale_domains"
    out = args.out or Path(tempfile.mkdtemp(prefix="synth-bench-"))

    started = time.perf_counter()
    results = synthesize(source, args.n, args.seed, out)
    generate_s = time.perf_counter() - started
    tasks = sum(r.stats["tasks"] for r in results)

    started = time.perf_counter()
    reports = [check_domain(r.folder) for r in results]
    check_s = time.perf_counter() - started

    failing = sum(len(r.errors) for r in reports)
    for r in results:
        s = r.stats
        print(f"{r.name:11s} {s['tasks']:5d} tasks  mean steps {s['mean_steps']:.2f}  write share "
              f"{s['write_share']:.2f}  kinds {s['by_kind']}  rejected {s['rejected']}")
    print(f"generated {tasks} verified tasks in {generate_s:.2f} s: {tasks / generate_s:.1f} tasks/s")
    print(f"env check tau over the same folders: {check_s:.2f} s ({tasks / check_s:.1f} tasks/s), "
          f"{failing} failing golden actions, all ok: {all(r.ok for r in reports)}")
    print(f"ratio={(generate_s / tasks) / (check_s / tasks):.3f}")


if __name__ == "__main__":
    main()
