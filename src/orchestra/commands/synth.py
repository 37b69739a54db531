"""`orchestra synth procedural --db PATH --n N --seed S --out DIR` and `orchestra synth export DIR --out FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestra.errors import ConfigError

app = typer.Typer(no_args_is_help=True)


@app.command("procedural")
def procedural(
    db: Annotated[Path, typer.Option("--db", help="A domain folder (db.json, policy.md), or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the τ²-format domain folder(s).")],
    n: Annotated[int, typer.Option("--n", help="Tasks in all (spread over the domains).")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same tasks.")] = 0,
) -> None:
    """Derive tools from a domain's database and policy and write verified tasks (no LLM)."""
    from orchestra.synth.procedural import synthesize

    try:
        results = synthesize(db, n, seed, out)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for r in results:
        s = r.stats
        typer.echo(f"{r.name}: {s['tasks']}/{s['requested']} tasks, {s['steps']} steps, "
                   f"write share {s['write_share']:.2f}, {s['rejected']} drafts rejected -> {r.folder}")


@app.command("export")
def export_command(
    folder: Annotated[Path, typer.Argument(help="A synthesized folder (one domain, or a folder of domains).")],
    out: Annotated[Path, typer.Option("--out", help="A .jsonl or .parquet file.")],
) -> None:
    """Write a synthesized set as one row per task, for training mixes."""
    from orchestra.synth.export import collected_stats, export

    try:
        count = export(folder, out)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stats = collected_stats(folder)
    for name, s in stats["domains"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in s["rejections"].items()) or "none"
        typer.echo(f"{name}: {s['tasks']} tasks, {s['steps']} steps, write share {s['write_share']:.2f}, "
                   f"rejected: {reasons}")
    typer.echo(f"{count} tasks -> {out} (statistics: {out.name}.stats.json)")
