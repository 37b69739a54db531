"""The self-contained HTML report: inline CSS, tables, plots as base64 PNG data URIs; no scripts, no external URL.

Every piece of text from the runs (policy specs, titles, instructions) is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from orchestra.evaluate.report import (
    COLUMNS,
    PAIRED_COLUMNS,
    PREFERENCE_COLUMNS,
    Benchmark,
    best_single,
    paired_rows,
    png_data_uri,
    preference_rows,
    table_rows,
)

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 9px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; font-family: monospace; }
tr.best td { background: #fff4d6; }
img { max-width: 100%; display: block; margin: 8px 0; }
p.note { font-size: 13px; color: #444; }
"""


def render_html(benchmarks: Sequence[Benchmark], figures: Sequence[Mapping[str, bytes]], title: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for bench, pngs in zip(benchmarks, figures, strict=True):
        best = best_single(bench)
        body.append(f"<h2>{html.escape(bench.title)}</h2>")
        body.append(f'<img alt="cost-accuracy Pareto plot" src="{png_data_uri(pngs["pareto"])}">')
        body.append(_table(COLUMNS, table_rows(bench),
                           highlight={i for i, r in enumerate(bench.runs) if r is best}))
        if best is not None:
            body.append(f'<p class="note">Best single model: <b>{html.escape(best.policy)}</b> (accuracy '
                        f'{best.results["accuracy"]:.4f}, ${best.results["cost_per_query_usd"]:.6f}/query).</p>')
            paired = paired_rows(bench)
            if paired:
                body.append(f'<p class="note">Against {html.escape(best.policy)}, item by item:</p>')
                body.append(_table(PAIRED_COLUMNS, paired))
        body.append('<p class="note">Tool-call shares per policy:</p>')
        body.append(f'<img alt="tool-call shares" src="{png_data_uri(pngs["calls"])}">')
        prefs = preference_rows(bench)
        if prefs:
            body.append('<p class="note">Preference following:</p>')
            body.append(_table(PREFERENCE_COLUMNS, prefs))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], highlight: set[int] | frozenset[int] = frozenset()
           ) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    best = ' class="best"'
    body = "".join(
        f"<tr{best if i in highlight else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
