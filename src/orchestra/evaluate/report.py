"""Reports over evaluation runs: a table per benchmark, the cost-accuracy Pareto plot, tool-call shares, preferences.

This module reads each run's `results.json`, groups runs by benchmark (environment, data, part, split seed, prices
and preferences), and renders the Markdown and the plots, with each policy against the best single model item by
item (`paired`); `report_html` renders the HTML from the same pieces, and `report_files.write_report(run_dirs, out)`
writes both.

The Pareto plot puts every policy at (cost per query, accuracy) on a log-scale cost axis, each point labelled; the
`always:<model>` points are the single models, joined by their frontier (the single models no other single model
beats on both cost and accuracy), with the best single model (highest accuracy) highlighted. Plots use matplotlib's
Agg backend (no display needed); matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError

FRONTIER_COLOR = "#d62728"
"""The single-model frontier line (tests look for this colour in a rendered report)."""
BEST_COLOR = "#ffb000"
SINGLE_COLOR = "#7f7f7f"
POLICY_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e")


@dataclass(frozen=True)
class Run:
    """One run folder's results."""

    path: Path
    results: dict[str, Any]

    @property
    def policy(self) -> str:
        return str(self.results.get("config", {}).get("spec") or self.results.get("orchestrator", {}).get("spec")
                   or self.path.name)

    @property
    def is_single_model(self) -> bool:
        return self.policy.startswith("always:")

    @property
    def preference_score(self) -> float | None:
        score = (self.results.get("preference") or {}).get("score")
        return None if score is None else float(score)


@dataclass(frozen=True)
class Benchmark:
    title: str
    runs: tuple[Run, ...]


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs from folders holding results.json, or from folders whose subfolders do (sorted by name)."""
    runs: list[Run] = []
    for raw in paths:
        path = Path(raw)
        candidates = [path] if (path / "results.json").exists() else sorted(
            p for p in path.iterdir() if (p / "results.json").exists()) if path.is_dir() else []
        if not candidates:
            raise ConfigError(f"report: {path} holds no results.json (run `orchestra eval` first)")
        for folder in candidates:
            try:
                runs.append(Run(folder, json.loads((folder / "results.json").read_text())))
            except ValueError as exc:
                raise ConfigError(f"report: {folder / 'results.json'} is not JSON ({exc})") from None
    return runs


def with_preference_scores(runs: Sequence[Run]) -> list[Run]:
    """Runs with preferences but no preference-following score get one against their base run, when the report
    holds it: the run of the same spec on the same benchmark without preferences (scored item by item)."""
    from orchestra.evaluate.run import preference_summary
    from orchestra.evaluate.store import read_items

    def key(run: Run) -> str:
        config = {k: v for k, v in run.results.get("config", {}).items() if k not in ("preferences", "label")}
        if isinstance(config.get("settings"), dict):
            config["settings"] = {k: v for k, v in config["settings"].items() if k != "preferences"}
        return json.dumps(config, sort_keys=True, default=str)

    bases = {key(r): r for r in runs if not flat_config(r.results).get("preferences")}
    out = []
    for run in runs:
        base = bases.get(key(run))
        if (flat_config(run.results).get("preferences") and run.preference_score is None and base is not None
                and (run.path / "items.jsonl").exists() and (base.path / "items.jsonl").exists()):
            digest = run.results.get("config_hash")
            records = [r for r in read_items(run.path / "items.jsonl") if r.get("config_hash", digest) == digest]
            summary = preference_summary(records, read_items(base.path / "items.jsonl"))
            run = Run(run.path, {**run.results, "preference": {**summary, "base_run": str(base.path)}})
        out.append(run)
    return out


def group_benchmarks(runs: Sequence[Run]) -> list[Benchmark]:
    """Runs grouped by what makes their numbers comparable, in first-seen order; policies sorted by cost."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(benchmark_title(run.results), []).append(run)
    return [Benchmark(title, tuple(sorted(rs, key=lambda r: (r.results["cost_per_query_usd"], r.policy))))
            for title, rs in groups.items()]


def flat_config(results: dict[str, Any]) -> dict[str, Any]:
    """A run's config with the environment's identity and the settings' preferences lifted to the top level (runs
    store them nested: `env` is the environment's `Suite.identity`, `settings` what the runner ran with)."""
    c = dict(results.get("config", {}))
    if isinstance(c.get("env"), dict):
        c = {**c["env"], **{k: v for k, v in c.items() if k != "env"}}
    settings = c.get("settings")
    if isinstance(settings, dict) and "preferences" not in c:
        c["preferences"] = settings.get("preferences")
    return c


def benchmark_title(results: dict[str, Any]) -> str:
    c = flat_config(results)
    parts = [str(c.get("env", "?"))]
    if c.get("data"):
        parts.append(Path(str(c["data"])).name)
    if c.get("part"):
        split = f"part {c['part']}"
        if c.get("dev_fraction"):
            split += f" (dev fraction {c['dev_fraction']}, seed {c.get('seed', 0)})"
        parts.append(split)
    prices = c.get("prices") or {}
    if prices.get("overrides"):
        parts.append(f"prices {Path(str(prices['overrides'])).name}")
    prefs = c.get("preferences") or {}
    if prefs.get("instruction"):
        parts.append(f"preference: {prefs['instruction']}")
    return " · ".join(parts)


# ---- tables ----------------------------------------------------------------------------------------------------

COLUMNS = ("policy", "n", "accuracy", "$/query", "latency s", "calls/query", "preference score")


def table_rows(bench: Benchmark) -> list[list[str]]:
    rows = []
    for run in bench.runs:
        r = run.results
        pref = run.preference_score
        row = [run.policy, str(r["n"]), f"{r['accuracy']:.4f}", f"{r['cost_per_query_usd']:.6f}",
               f"{r['latency_per_query_s']:.3f}", f"{r.get('calls', {}).get('per_query', 0.0):.2f}",
               "—" if pref is None else f"{pref:.3f}"]
        if r.get("pass_hat_k"):
            row[0] += "  (pass^k " + ", ".join(f"{k}: {v:.3f}" for k, v in r["pass_hat_k"].items()) + ")"
        rows.append(row)
    return rows


def best_single(bench: Benchmark) -> Run | None:
    singles = [r for r in bench.runs if r.is_single_model]
    return max(singles, key=lambda r: (r.results["accuracy"], -r.results["cost_per_query_usd"])) if singles else None


PAIRED_COLUMNS = ("policy", "items won / lost", "McNemar p", "accuracy difference [95% CI]",
                  "cost change [95% CI]")


def paired_rows(bench: Benchmark) -> list[list[str]]:
    """Each policy that is not a single model against the best single model, item by item (`orchestra compare`);
    a run whose items differ from the best single model's (another `--limit`, say) is left out."""
    from orchestra.evaluate.paired import compare_runs, table_cells

    best = best_single(bench)
    if best is None:
        return []
    rows = []
    for run in bench.runs:
        if run.is_single_model:
            continue
        try:
            c = compare_runs(run.path, best.path, names=(run.policy, best.policy))
        except ConfigError:
            continue
        rows.append([run.policy, *table_cells(c.as_dict())])
    return rows


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), sorted by cost."""
    best: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not best or acc > best[-1][1]:
            best.append((cost, acc))
    return best


def preference_rows(bench: Benchmark) -> list[list[str]]:
    rows = []
    for run in bench.runs:
        pref = run.results.get("preference")
        if pref:
            score = pref.get("score")
            rows.append([run.policy, f"{pref.get('dispreferred_call_share', 0.0):.3f}",
                         "—" if score is None else f"{score:.3f}", str(pref.get("n_compared", "—"))])
    return rows


PREFERENCE_COLUMNS = ("policy", "share of calls to avoided tools", "preference-following score (mean)", "compared")


def render_markdown(benchmarks: Sequence[Benchmark], title: str) -> str:
    lines = [f"# {title}", ""]
    for i, bench in enumerate(benchmarks, 1):
        lines += [f"## {bench.title}", "", _md_table(COLUMNS, table_rows(bench)), ""]
        best = best_single(bench)
        if best is not None:
            lines += [f"Best single model: **{best.policy}** (accuracy {best.results['accuracy']:.4f}, "
                      f"${best.results['cost_per_query_usd']:.6f}/query).", ""]
            paired = paired_rows(bench)
            if paired:
                lines += [f"Against {best.policy}, item by item:", "", _md_table(PAIRED_COLUMNS, paired), ""]
        lines += [f"![cost-accuracy Pareto plot](pareto-{i}.png)", "", "Tool-call shares per policy:", "",
                  f"![tool-call shares](calls-{i}.png)", ""]
        prefs = preference_rows(bench)
        if prefs:
            lines += ["Preference following:", "", _md_table(PREFERENCE_COLUMNS, prefs), ""]
    return "\n".join(lines)


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---- plots -----------------------------------------------------------------------------------------------------

def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_png(bench: Benchmark) -> bytes:
    """The cost-accuracy plot of one benchmark as PNG bytes (see the module docstring)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    costs = [r.results["cost_per_query_usd"] for r in bench.runs]
    positive = [c for c in costs if c > 0]
    floor = min(positive) / 3 if positive else 1e-6  # a free policy is drawn at the left edge of the log axis

    def x(cost: float) -> float:
        return cost if cost > 0 else floor

    singles = [(x(r.results["cost_per_query_usd"]), r.results["accuracy"]) for r in bench.runs if r.is_single_model]
    line = frontier(singles)
    if len(line) > 1:
        ax.plot(*zip(*line, strict=True), color=FRONTIER_COLOR, linewidth=2.5, zorder=2,
                label="single-model frontier")
    best = best_single(bench)
    color_index = 0
    for run in bench.runs:
        px, py = x(run.results["cost_per_query_usd"]), run.results["accuracy"]
        if run is best:
            ax.scatter([px], [py], s=260, marker="*", color=BEST_COLOR, edgecolor="black", zorder=4,
                       label=f"best single model ({run.policy.removeprefix('always:')})")
        elif run.is_single_model:
            ax.scatter([px], [py], s=40, color=SINGLE_COLOR, zorder=3)
        else:
            ax.scatter([px], [py], s=70, color=POLICY_COLORS[color_index % len(POLICY_COLORS)], zorder=3,
                       edgecolor="black", linewidth=0.5)
            color_index += 1
        ax.annotate(run.policy.removeprefix("always:"), (px, py), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("cost per query (USD, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title(_wrap(bench.title, 90), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if line or best is not None:
        ax.legend(loc="lower right", fontsize=8)
    return _png(fig, plt)


def calls_png(bench: Benchmark) -> bytes:
    """Horizontal stacked bars: per policy, the share of its calls that went to each tool or model."""
    plt = _pyplot()
    names = sorted({k for r in bench.runs for k in r.results.get("calls", {}).get("share", {})})
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bench.runs) + 1.6), dpi=110)
    cmap = plt.get_cmap("tab20")
    labels = [r.policy for r in bench.runs]
    left = [0.0] * len(bench.runs)
    for j, name in enumerate(names):
        widths = [r.results.get("calls", {}).get("share", {}).get(name, 0.0) for r in bench.runs]
        ax.barh(labels, widths, left=left, color=cmap(j % 20), label=name, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of calls")
    ax.invert_yaxis()
    if names:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(1, len(bench.runs)) - 0.12),
                  ncol=min(6, len(names)), fontsize=7, frameon=False)
    return _png(fig, plt)


def _png(fig: Any, plt: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _wrap(text: str, width: int) -> str:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return "\n".join([*lines, current]) if current else "\n".join(lines)
