"""What `orchestra demo` reports: the summary of its runs, its targets, the item-by-item comparisons, the paper
reward per policy, the printed table, and the results section (`results.md`) that README and docs/demo.md copy
verbatim. Also the commit line every published table ends with (`run_footer`), which the other demo commands use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def current_commit() -> str:
    """The git commit the code runs at (with `+dirty` when the tree has changes), or "unknown"."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here.parent, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


ROUTERS = ("cascade", "knn")
"""The fitted routers the orchestrator must be above, at no more cost."""
RESULT_ROWS = ("always:gpt-4", "cascade", "knn", "teacher", "orchestra", "sft", "untrained",
               "orchestra+avoid-claude", "always:yi-34b", "cheapest", "oracle")


def results_markdown(summary: dict[str, Any]) -> str:
    """The results table of one demo run, from its summary.json alone (README and docs/demo.md copy it verbatim;
    a test checks the committed copy against the committed summary)."""
    runs = summary["runs"]
    best = summary["best_single_cost_usd"]
    names = {"cascade": "cascade (fit on the training part)", "knn": "knn router (fit on the training part)",
             "teacher": "teacher: the demonstrations' policy (fit on the training part)",
             "orchestra": "**orchestra: SmolLM2-135M, SFT + GRPO**", "sft": "orchestra, SFT only",
             "untrained": "SmolLM2-135M untrained (prompted)", "oracle": "oracle (knows the outcomes)",
             "orchestra+avoid-claude": '**orchestra with "Avoid claude models."**', "cheapest": "cheapest model"}
    lines = ["| policy | accuracy | $/query | cost vs " + summary["best_single"].removeprefix("always:") + " |",
             "|---|---|---|---|"]
    for label in RESULT_ROWS:
        r = runs.get(label)
        if r is None:
            continue
        name = names.get(label, label)
        if label == summary["best_single"]:
            name += " (best single model)"
        accuracy = f"{r['accuracy']:.3f}"
        if label == "orchestra+avoid-claude":
            accuracy += f" (claude calls: {summary['avoid_claude_call_share']:.0%})"
        lines.append(f"| {name} | {accuracy} | {r['cost_per_query_usd']:.6f} | "
                     f"{r['cost_per_query_usd'] / best:.0%} |")
    return "\n".join([*lines, "", *paired_markdown(summary.get("paired", {})), run_footer(summary)]) + "\n"


def paired_markdown(paired: dict[str, dict[str, Any]]) -> list[str]:
    """The item-by-item table of a summary's `paired` comparisons, then a blank line (nothing when there are none)."""
    from orchestra.evaluate.paired import table_cells

    if not paired:
        return []
    lines = ["| orchestra against | items won / lost | McNemar p | accuracy difference [95% CI] | "
             "cost change [95% CI] |", "|---|---|---|---|---|"]
    lines += [f"| {other} | " + " | ".join(table_cells(c)) + " |" for other, c in paired.items()]
    return [*lines, ""]


def run_footer(summary: dict[str, Any]) -> str:
    """The last line of a published table: the commit the run was at and how long it took."""
    minutes = summary["timings_s"]["total_s"] / 60
    return (f"Run at commit {summary.get('commit', 'unknown')}: {minutes:.1f} minutes"
            f"{' (quick: tiny random model, 60 dev rows)' if summary.get('quick') else ''}.")


def summarize(runs: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    singles = {k: r for k, (_, r) in runs.items() if k.startswith("always:")}
    best_label, best = max(singles.items(), key=lambda kv: (kv[1]["accuracy"], -kv[1]["cost_per_query_usd"]))
    ours, avoid = runs["orchestra"][1], runs["orchestra+avoid-claude"][1]
    calls = avoid.get("calls", {}).get("share", {})
    avoided_share = sum(v for k, v in calls.items() if k.startswith("claude"))
    return {
        "best_single": best_label,
        "best_single_accuracy": best["accuracy"],
        "best_single_cost_usd": best["cost_per_query_usd"],
        "orchestra_accuracy": ours["accuracy"],
        "orchestra_cost_usd": ours["cost_per_query_usd"],
        "accuracy_ratio": ours["accuracy"] / best["accuracy"],
        "cost_ratio": ours["cost_per_query_usd"] / best["cost_per_query_usd"],
        "avoid_accuracy": avoid["accuracy"],
        "avoid_claude_call_share": avoided_share,
        "avoid_accuracy_loss_points": 100 * (ours["accuracy"] - avoid["accuracy"]),
        "targets": {
            "accuracy >= 95% of best single": ours["accuracy"] >= 0.95 * best["accuracy"],
            "cost <= 35% of best single": ours["cost_per_query_usd"] <= 0.35 * best["cost_per_query_usd"],
            "avoided share <= 5%": avoided_share <= 0.05,
            "accuracy loss with preference <= 3 points": ours["accuracy"] - avoid["accuracy"] <= 0.03,
            "above the cascade and the knn router at no more cost": all(
                ours["accuracy"] > runs[r][1]["accuracy"]
                and ours["cost_per_query_usd"] <= runs[r][1]["cost_per_query_usd"] for r in ROUTERS),
        },
        "runs": {k: {"accuracy": r["accuracy"], "cost_per_query_usd": r["cost_per_query_usd"],
                     "calls": r.get("calls", {}).get("share", {}), "preference": r.get("preference"),
                     "format_errors": r.get("format_errors", 0)}
                 for k, (_, r) in runs.items()},
    }


def paired_against(runs: dict[str, tuple[Path, dict[str, Any]]], label: str,
                   others: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`label`'s run against each of `others`, item by item (`orchestra compare`): wins, losses, McNemar p and the
    bootstrap intervals of the differences."""
    from orchestra.evaluate.paired import compare_runs

    return {other: compare_runs(runs[label][0], runs[other][0], names=(label, other)).as_dict()
            for other in dict.fromkeys(others) if other in runs}


def paper_reward_comparison(runs: dict[str, tuple[Path, dict[str, Any]]], labels: tuple[str, ...],
                            prefs: Any) -> dict[str, float]:
    """Mean paper reward per policy, each dev task's group being the policies' trajectories on it.

    The paper's reward is group-relative (min-max normalized within a group), so policies are compared by putting
    their rollouts of one task in one group: R = M^ . P if solved else 0, with the preference they ran under
    (p_outcome 1, p_cost 0.5).
    """
    from orchestra.evaluate.store import read_items
    from orchestra.rewards.preference import Features, group_rewards

    items = {label: {r["task_id"]: r for r in read_items(runs[label][0] / "items.jsonl")} for label in labels}
    common = set.intersection(*(set(v) for v in items.values()))
    names: tuple[str, ...] = ()
    totals = dict.fromkeys(labels, 0.0)
    for task_id in sorted(common):
        group = [Features(names, (), bool(items[lb][task_id]["solved"]), float(items[lb][task_id]["cost_usd"]),
                          float(items[lb][task_id].get("tool_latency_s", 0.0))) for lb in labels]
        for label, reward in zip(labels, group_rewards(group, prefs), strict=True):
            totals[label] += reward
    return {label: totals[label] / max(1, len(common)) for label in labels}


def print_table(console: Console, runs: dict[str, tuple[Path, dict[str, Any]]], summary: dict[str, Any]) -> None:
    table = Table(title="RouterBench dev part (recorded outcomes of 11 LLMs)")
    for column in ("policy", "accuracy", "$/query", "cost vs best", "calls/query", "top calls", "pref. score"):
        table.add_column(column, justify="left" if column in ("policy", "top calls") else "right")
    best_cost = summary["best_single_cost_usd"]
    for label, (_, r) in sorted(runs.items(), key=lambda kv: -kv[1][1]["accuracy"]):
        calls = r.get("calls", {})
        shares = calls.get("share", {})
        top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3])
        pref = (r.get("preference") or {}).get("score")
        style = "bold green" if label.startswith("orchestra") else None
        table.add_row(label, f"{r['accuracy']:.3f}", f"{r['cost_per_query_usd']:.6f}",
                      f"{r['cost_per_query_usd'] / best_cost:.0%}", f"{calls.get('per_query', 0.0):.2f}", top,
                      "-" if pref is None else f"{pref:.2f}", style=style)
    console.print(table)
    for name, ok in summary["targets"].items():
        console.print(f"{'[green]met' if ok else '[red]missed'}[/]  {name}")
    if "paper_reward" in summary:
        console.print("paper reward per task (group = the policies' episodes of one task): " + ", ".join(
            f"{k} {v:.3f}" for k, v in summary["paper_reward"].items()))
    console.print(f"orchestra: {summary['accuracy_ratio']:.1%} of {summary['best_single']}'s accuracy at "
                  f"{summary['cost_ratio']:.1%} of its cost; with 'Avoid claude models.': claude share "
                  f"{summary['avoid_claude_call_share']:.1%}, accuracy change "
                  f"{-summary['avoid_accuracy_loss_points']:+.1f} points")
