"""The trajectory viewer: plain server-rendered HTML pages over a run folder (`orchestra.serve.runs`).

`GET /trajectories` lists the run's items with filters (`solved=yes|no`, `termination=...`, `max_cost=<$>`,
`q=<text in the task id or answer>`) and totals; `GET /trajectories/{id}` shows one episode: the preference, then
each turn's orchestrator reply and tool calls with status, cost and latency, and the messages as sent. Served by
`orchestra serve` (over its `--trajectories` folder, behind the same API keys) and by `orchestra view RUN_DIR`.

Every value from a run is HTML-escaped (model and tool output is untrusted text); the pages run no script.
The folder is read again on every request, so a live server's page shows its latest episodes. Behind API keys,
a caller sees only the episodes its own key ran (`metadata.account`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from orchestra.serve.runs import RunItem

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2433;background:#fafbfc}
h1{font-size:20px;margin:0 0 12px} table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d7dbe3;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6} .ok{color:#137333;font-weight:600} .bad{color:#b3261e;font-weight:600}
.muted{color:#6b7385} form{margin:0 0 14px} input,select{margin-right:8px}
.turn{background:#fff;border:1px solid #d7dbe3;border-left:5px solid #3569d4;margin:10px 0;padding:8px 12px}
pre{white-space:pre-wrap;margin:4px 0;background:#f3f5f9;padding:6px;border-radius:4px}
.totals{margin:8px 0 14px;font-weight:600}
"""


def viewer_router(load: Callable[[Request], list[RunItem]], title: str) -> APIRouter:
    """The viewer's routes; `load(request)` gives the items the caller may see."""
    router = APIRouter()

    @router.get("/trajectories", response_class=HTMLResponse)
    async def listing(request: Request, solved: str = "", termination: str = "", max_cost: str = "",
                      q: str = "") -> HTMLResponse:
        items = load(request)
        shown = [i for i in items if _keep(i, solved, termination, max_cost, q)]
        filters = {"solved": solved, "termination": termination, "max_cost": max_cost, "q": q}
        return HTMLResponse(_page(title, _filters(items, filters) + _table(shown, len(items))))

    @router.get("/trajectories/{item_id:path}", response_class=HTMLResponse)
    async def detail(request: Request, item_id: str) -> HTMLResponse:
        item = next((i for i in load(request) if i.id == item_id), None)
        if item is None:
            return HTMLResponse(_page(title, f"<p>No item {_e(item_id)} in this run.</p>"), 404)
        return HTMLResponse(_page(f"{title}: {item.id}", _episode(item)))

    return router


def _keep(item: RunItem, solved: str, termination: str, max_cost: str, q: str) -> bool:
    t = item.trajectory
    if solved in ("yes", "no") and item.solved is not (solved == "yes"):
        return False
    if termination and str(t.termination) != termination:
        return False
    try:
        if max_cost and t.cost_usd > float(max_cost):
            return False
    except ValueError:
        pass  # an unreadable bound filters nothing; the form shows what was typed
    return not q or q.lower() in f"{item.id} {t.final_answer or ''}".lower()


def _filters(items: list[RunItem], values: dict[str, str]) -> str:
    terminations = sorted({str(i.trajectory.termination) for i in items})
    options = "".join(f'<option value="{_e(t)}"{" selected" if values["termination"] == t else ""}>{_e(t)}</option>'
                      for t in ["", *terminations])
    solved = "".join(f'<option value="{v}"{" selected" if values["solved"] == v else ""}>{v or "any"}</option>'
                     for v in ("", "yes", "no"))
    return (f'<form method="get">solved <select name="solved">{solved}</select> termination '
            f'<select name="termination">{options}</select> max cost $ <input name="max_cost" size="8" '
            f'value="{_e(values["max_cost"])}"> text <input name="q" value="{_e(values["q"])}">'
            '<button type="submit">filter</button></form>')


def _table(items: list[RunItem], total: int) -> str:
    solved = [i.solved for i in items if i.solved is not None]
    cost = sum(i.trajectory.cost_usd for i in items)
    head = (f'<div class="totals">{len(items)} of {total} episodes; cost ${cost:.6f}'
            + (f"; solved {sum(solved)}/{len(solved)}" if solved else "") + "</div>")
    rows = []
    for i in items:
        t = i.trajectory
        mark = "" if i.solved is None else ('<span class="ok">yes</span>' if i.solved else '<span class="bad">no</span>')
        calls = ", ".join(f"{_e(k)}×{v}" for k, v in sorted(t.tool_counts().items()))
        rows.append(f'<tr><td><a href="/trajectories/{quote(i.id)}">{_e(i.id)}</a></td><td>{mark}</td>'
                    f"<td>{_e(str(t.termination))}</td><td>{len(t.turns)}</td><td>{calls}</td>"
                    f"<td>${t.cost_usd:.6f}</td><td>{t.latency_s:.2f} s</td><td>{_e(_cut(t.final_answer or '', 80))}</td>"
                    f"<td>{_e(_cut(i.instruction, 60))}</td></tr>")
    return (head + "<table><tr><th>episode</th><th>solved</th><th>termination</th><th>turns</th><th>calls</th>"
            "<th>cost</th><th>latency</th><th>answer</th><th>preference</th></tr>" + "".join(rows) + "</table>")


def _episode(item: RunItem) -> str:
    t = item.trajectory
    parts = [f'<p><a href="/trajectories">all episodes</a></p><div class="totals">{_e(str(t.termination))}; '
             f"{len(t.turns)} turns; ${t.cost_usd:.6f} (orchestrator ${t.orchestrator_cost_usd:.6f}, tools "
             f"${t.tool_cost_usd:.6f}); {t.latency_s:.2f} s"
             + ("" if item.solved is None else f"; solved: {'yes' if item.solved else 'no'}") + "</div>",
             f"<p>preference: {_e(item.instruction) or '<span class=muted>none</span>'}</p>"]
    if t.error:
        parts.append(f'<p class="bad">error: {_e(t.error)}</p>')
    for turn in t.turns:
        c = turn.completion
        arguments = {call.id: json.dumps(call.arguments, ensure_ascii=False) for call in c.tool_calls}
        calls = "".join(
            f"<tr><td>{_e(o.name)}{_e(f' ({o.target})' if o.target else '')}"
            f"<pre>{_e(_cut(arguments.get(o.call_id, ''), 500))}</pre></td>"
            f'<td class="{"ok" if o.status == "ok" else "bad"}">{_e(o.status)}</td><td>${o.cost_usd:.6f}</td>'
            f"<td>{o.latency_s:.3f} s</td><td><pre>{_e(_cut(o.content, 2000))}</pre></td></tr>"
            for o in turn.observations)
        table = ("<table><tr><th>call</th><th>status</th><th>cost</th><th>latency</th><th>result</th></tr>"
                 + calls + "</table>") if calls else ""
        parts.append(f'<div class="turn"><b>turn {turn.index}</b> <span class="muted">{_e(c.model)}; '
                     f"{c.usage.input_tokens}+{c.usage.output_tokens} tokens; ${c.cost_usd:.6f}; "
                     f"{turn.latency_s:.3f} s</span><pre>{_e(c.text) or '<span class=muted>(no text)</span>'}</pre>"
                     f"{table}</div>")
    parts.append(f"<p>final answer: <b>{_e(t.final_answer or '-')}</b></p><h2>messages</h2>")
    parts += [f"<p><b>{_e(m.role)}</b></p><pre>{_e(_cut(m.content, 4000))}</pre>" for m in t.messages]
    return "".join(parts)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{STYLE}</style>"
            f"</head><body><h1>{_e(title)}</h1>{body}</body></html>")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _e(text: str) -> str:
    return html.escape(text, quote=True)

