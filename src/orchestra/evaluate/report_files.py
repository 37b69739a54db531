"""`write_report(run_dirs, out)`: `report.md` (with the plots as PNG files beside it) and a self-contained
`report.html` (plots embedded as base64 PNG, inline CSS, no scripts, nothing fetched) for a set of runs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from orchestra.evaluate.report import (
    calls_png,
    group_benchmarks,
    load_runs,
    pareto_png,
    render_markdown,
    with_preference_scores,
)
from orchestra.evaluate.report_html import render_html


def write_report(paths: Iterable[str | Path], out: str | Path, *, title: str = "orchestra evaluation report"
                 ) -> list[Path]:
    """Write report.md (+ its PNGs) and report.html into `out`; returns the two report paths."""
    benchmarks = group_benchmarks(with_preference_scores(load_runs(paths)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[dict[str, bytes]] = []
    for i, bench in enumerate(benchmarks):
        pngs = {"pareto": pareto_png(bench), "calls": calls_png(bench)}
        for name, png in pngs.items():
            (out / f"{name}-{i + 1}.png").write_bytes(png)
        figures.append(pngs)
    md = out / "report.md"
    md.write_text(render_markdown(benchmarks, title))
    html = out / "report.html"
    html.write_text(render_html(benchmarks, figures, title))
    return [md, html]
