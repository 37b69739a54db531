"""Decoding cost of the compact tool-call dialect against hermes, on the demo's evaluation.

Two orchestrators trained the same way (`orchestra demo`'s SFT settings and seed on RouterBench), one writing hermes
calls (`<tool_call>\\n{"name": "ask", "arguments": {"model": "mixtral"}}\\n</tool_call>`, ~31 tokens with SmolLM2)
and one writing compact calls (`ask(model=mixtral)`, ~9), each run greedily over the same dev tasks with the demo's
evaluation settings (concurrency 64, micro-batched on this CPU). Reported per orchestrator: wall time, tokens written
per episode, turns per episode, accuracy and $/query (the two were trained separately, so their decisions may
differ; what the dialect changes is the tokens each decision costs).

Make the two folders with `orchestra demo` (compact, the default) and the same with `calls: hermes` in the
routerbench env config, or pass any two routerbench orchestrator folders.

Usage: `python bench/call_dialect.py --hermes DIR --compact DIR [--tasks 222] [--threads 2]`.
The last line printed is `ratio=<compact wall time / hermes wall time>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import torch

from orchestra.backends.base import Sampling
from orchestra.envs.registry import load_suite
from orchestra.evaluate.spec import SpecContext, resolve_orchestrator
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings, run_many


def measure(folder: Path, suite, tasks) -> dict[str, float]:
    meta = json.loads((folder / "orchestra.json").read_text())
    resolved = resolve_orchestrator(str(folder), SpecContext(suite, 0))
    settings = resolved.episode_settings(EpisodeSettings(limits=Limits(max_turns=4), sampling=Sampling(
        max_tokens=suite.turn_tokens), build_prompt=resolved.build_prompt))
    prefs = [suite.preference_presets["default"]] * len(tasks)
    started = time.perf_counter()
    results = asyncio.run(run_many(suite.env, tasks, resolved.backend, settings, concurrency=64, preferences=prefs))
    wall = time.perf_counter() - started
    written = [sum(t.completion.usage.output_tokens for t in r.trajectory.turns) for r in results]
    return {"calls": meta.get("calls", "hermes"), "wall_s": wall, "tokens_per_episode": statistics.fmean(written),
            "turns_per_episode": statistics.fmean(len(r.trajectory.turns) for r in results),
            "accuracy": statistics.fmean(float(r.outcome.solved) for r in results),
            "cost_per_query_usd": statistics.fmean(r.trajectory.cost_usd for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hermes", type=Path, required=True)
    parser.add_argument("--compact", type=Path, required=True)
    parser.add_argument("--tasks", type=int, default=222)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite({"name": "routerbench", "dev_fraction": 0.1, "seed": 0}, part="dev")
    tasks = list(suite.tasks)[: args.tasks]
    rows = {}
    for label, folder in (("hermes", args.hermes), ("compact", args.compact)):
        rows[label] = measure(folder, suite, tasks)
        if rows[label]["calls"] != label:
            raise SystemExit(f"--{label} {folder}: that orchestrator writes {rows[label]['calls']} calls")
    print(f"{len(tasks)} dev tasks, concurrency 64, {args.threads} threads")
    print("dialect   wall s   tokens written/episode  turns/episode  accuracy  $/query")
    for label, r in rows.items():
        print(f"{label:8s} {r['wall_s']:7.1f}   {r['tokens_per_episode']:22.1f}  {r['turns_per_episode']:13.2f}  "
              f"{r['accuracy']:8.3f}  {r['cost_per_query_usd']:.6f}")
    print(f"ratio={rows['compact']['wall_s'] / rows['hermes']['wall_s']:.3f}")


if __name__ == "__main__":
    main()
