"""`orchestra export RUN_DIR --out FILE.parquet`: a run folder as Parquet, for pandas, duckdb and `datasets`.

Two files: `FILE.parquet`, one row per item (outcome, totals, termination, preference, and the conversation in
OpenAI's chat shape as a `messages` list column: see `orchestra.serve.runs`), and `FILE.calls.parquet`, one row per
tool call (item, turn, tool, target model, status, cost, latency, arguments, result). Both are written to a temporary
name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.errors import ConfigError


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (items.jsonl or trajectories.jsonl) or such a file.")],
    out: Annotated[Path, typer.Option("--out", help="The items' Parquet file; calls go beside it (.calls.parquet).")],
) -> None:
    """Export a run's items and tool calls to Parquet."""
    try:
        items, calls = write_parquet(run_dir, out)
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{items} items -> {out}; {calls} calls -> {calls_path(out)}")


def calls_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".parquet") + ".calls.parquet")


def write_parquet(run_dir: Path, out: Path) -> tuple[int, int]:
    """(items written, calls written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestra.serve.runs import call_rows, item_row, load_run

    if out.suffix != ".parquet":
        raise ConfigError(f"--out {out}: give a .parquet file name")
    items = load_run(run_dir)
    rows = [item_row(i) for i in items]
    calls = [c for i in items for c in call_rows(i)]
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic(pq, pa.Table.from_pylist(rows, schema=_item_schema(pa)), out)
    _atomic(pq, pa.Table.from_pylist(calls, schema=_call_schema(pa)), calls_path(out))
    return len(rows), len(calls)


def _atomic(pq: Any, table: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _item_schema(pa: Any) -> Any:
    function = pa.struct([("name", pa.string()), ("arguments", pa.string())])
    call = pa.struct([("id", pa.string()), ("type", pa.string()), ("function", function)])
    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(call)),
                         ("tool_call_id", pa.string()), ("name", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("task_id", pa.string()), ("solved", pa.bool_()), ("final_answer", pa.string()),
        ("termination", pa.string()), ("error", pa.string()), ("orchestrator", pa.string()),
        ("turns", pa.int64()), ("calls", pa.int64()), ("format_errors", pa.int64()),
        ("cost_usd", pa.float64()), ("orchestrator_cost_usd", pa.float64()), ("tool_cost_usd", pa.float64()),
        ("latency_s", pa.float64()), ("tool_counts", pa.list_(pa.struct([("tool", pa.string()), ("calls", pa.int64())]))),
        ("preference", pa.string()), ("messages", pa.list_(message)),
    ])


def _call_schema(pa: Any) -> Any:
    return pa.schema([
        ("item_id", pa.string()), ("turn", pa.int64()), ("call_id", pa.string()), ("name", pa.string()),
        ("target", pa.string()), ("status", pa.string()), ("cost_usd", pa.float64()), ("latency_s", pa.float64()),
        ("arguments", pa.string()), ("content", pa.string()),
    ])
