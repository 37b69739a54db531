"""`orchestra demo-seeds`: untrained vs SFT only vs SFT + GRPO over several training seeds, with their spread.

Each seed is a whole `orchestra demo --train-seed S --compare-sft` run into OUT/seed-S (resumable like the demo).
The split stays `--seed`'s, so every run is measured on the same dev rows and the spread is the training's alone.
The untrained model does not depend on the training seed (its episodes are sampled with the split's seed), so it is
evaluated once, in the first seed's run, and that run is handed to the others (the evaluation store resumes from it
after checking its inputs are the same); it is the slowest evaluation, the untrained model writing long answers.
Per policy the table gives the mean and the range over seeds of dev accuracy, $/query and the paper's reward (its
group is the three policies' episodes of one task, so the reward compares them on equal terms), then GRPO's gain over
SFT seed by seed: "GRPO beats SFT" holds beyond run noise only if every seed agrees and the mean gain exceeds the
spread of SFT alone.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.commands.demo import demo
from orchestra.commands.demo_results import current_commit

POLICIES = {"untrained": "SmolLM2-135M untrained (prompted)", "sft": "SFT only", "orchestra": "SFT + GRPO"}


def demo_seeds(
    seeds: Annotated[list[int], typer.Option(
        "--train-seed", help="Training seeds (repeatable); 0 is `make demo`'s own.")] = [0, 1, 2],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo-seeds"),
    data: Annotated[str | None, typer.Option(help="RouterBench CSV or folder (default: shared data).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (fixed across runs).")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny random model, small sizes: a smoke test.")] = False,
) -> None:
    if len(set(seeds)) < 2:
        from orchestra.errors import ConfigError

        raise ConfigError("--train-seed: give at least two different seeds (a spread needs two runs)")
    summaries = {}
    for s in seeds:
        share_untrained(out / f"seed-{seeds[0]}", out / f"seed-{s}")
        demo(quick=quick, out=out / f"seed-{s}", data=data, seed=seed, compare_sft=True, train_seed=s)
        summaries[s] = json.loads((out / f"seed-{s}" / "summary.json").read_text())
    summary = combine(summaries)
    summary.update(commit=current_commit(), quick=quick, split_seed=seed)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(results_markdown(summary))
    print(results_markdown(summary))


def share_untrained(first: Path, other: Path) -> None:
    """Give `other` the untrained model's evaluation run of `first` (when `first` has one and `other` has none)."""
    source, target = first / "runs" / "untrained", other / "runs" / "untrained"
    if source == target or not source.exists() or target.exists():
        return
    shutil.copytree(source, target)


def combine(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per policy and measure, the values of every seed (keys: seeds as strings, for JSON)."""
    per: dict[str, dict[str, dict[str, float]]] = {}
    for s, summary in summaries.items():
        for label in POLICIES:
            run = summary["runs"][label]
            values = per.setdefault(label, {"accuracy": {}, "cost_per_query_usd": {}, "paper_reward": {}})
            values["accuracy"][str(s)] = run["accuracy"]
            values["cost_per_query_usd"][str(s)] = run["cost_per_query_usd"]
            values["paper_reward"][str(s)] = summary["paper_reward"][label]
    minutes = sum(x["timings_s"]["total_s"] for x in summaries.values()) / 60
    return {"policies": per, "seeds": [str(s) for s in summaries], "minutes": minutes}


def results_markdown(summary: dict[str, Any]) -> str:
    """The table of one run of several seeds, from its summary.json alone."""
    per, seeds = summary["policies"], summary["seeds"]

    def cell(values: dict[str, float], digits: int) -> str:
        xs = [values[s] for s in seeds]
        return f"{statistics.fmean(xs):.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"

    lines = [f"| policy ({len(seeds)} training seeds: mean (min–max)) | dev accuracy | $/query | paper reward |",
             "|---|---|---|---|"]
    for label, name in POLICIES.items():
        v = per[label]
        lines.append(f"| {name} | {cell(v['accuracy'], 3)} | {cell(v['cost_per_query_usd'], 6)} | "
                     f"{cell(v['paper_reward'], 3)} |")
    gains = [per["orchestra"]["paper_reward"][s] - per["sft"]["paper_reward"][s] for s in seeds]
    sft = [per["sft"]["paper_reward"][s] for s in seeds]
    beyond = all(g > 0 for g in gains) and statistics.fmean(gains) > max(sft) - min(sft)
    lines += ["", "GRPO's paper-reward gain over SFT per seed: " + ", ".join(
        f"seed {s}: {g:+.3f}" for s, g in zip(seeds, gains, strict=True)) + ". " + (
        "Every seed gains, by more than SFT's own spread." if beyond else
        "Not beyond run noise: a seed does not gain, or the mean gain is within SFT's own spread."),
              "", f"Run at commit {summary.get('commit', 'unknown')}: {summary['minutes']:.1f} minutes"
                  f"{' (quick: tiny random model, 60 dev rows)' if summary.get('quick') else ''}."]
    return "\n".join(lines) + "\n"
