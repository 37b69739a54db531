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


@app.command("llm")
def llm_command(
    domain: Annotated[str, typer.Option("--domain", help="What the domain is about, e.g. car_rental.")],
    model: Annotated[str, typer.Option("--model", help="NAME (with --base-url), http(s)://URL (with "
                                                      "--endpoint-model), or bundled (SmolLM2 in this process).")],
    out: Annotated[Path, typer.Option("--out", help="The domain folder to write (its .cache/ makes reruns resume).")],
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint of --model, e.g. "
                                                                    "http://127.0.0.1:8000/v1.")] = None,
    endpoint_model: Annotated[str | None, typer.Option(help="Model name served at an http(s) --model.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Second model for the realism check (same forms; "
                                                         "default: --model).")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Endpoint of --judge-model (default: --base-url).")
                              ] = None,
    strong_model: Annotated[list[str] | None, typer.Option(help="A strong model for the 'too easy' filter "
                                                           "(repeatable; same forms): tasks every one solves at "
                                                           "pass@k are dropped.")] = None,
    strong_base_url: Annotated[str | None, typer.Option(help="Endpoint of the --strong-model names (default: "
                                                             "--base-url).")] = None,
    easy_k: Annotated[int, typer.Option(help="Trials per strong model (pass@k).")] = 2,
    api_key_env: Annotated[str | None, typer.Option(help="Env var holding the endpoint's key.")] = None,
    prices: Annotated[Path | None, typer.Option(help="Price YAML laid over the packaged table.")] = None,
    tables: Annotated[int, typer.Option("--tables", help="Tables to design.")] = 3,
    records: Annotated[int, typer.Option("--records", help="Records per table.")] = 6,
    tasks: Annotated[int, typer.Option("--tasks", help="Customer intents (each gives at most one task, plus its "
                                                       "evolved version).")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the sampling and every random choice.")] = 0,
    batch: Annotated[int, typer.Option(help="Records per model call.")] = 5,
    attempts: Annotated[int, typer.Option(help="Tries per table, schema and tool.")] = 2,
    evolve: Annotated[bool, typer.Option(help="Also make a harder version of each task.")] = True,
    concurrency: Annotated[int, typer.Option(help="Model calls in flight.")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    max_tokens: Annotated[int, typer.Option(help="Tokens per model answer.")] = 768,
    timeout_s: Annotated[float, typer.Option(help="Per-attempt HTTP timeout.")] = 120.0,
) -> None:
    """Synthesize a domain from nothing with an LLM: tables, schema, records, tools, tasks (resumable)."""
    import asyncio

    from orchestra.synth.llm.endpoints import check_reachable, resolve_model
    from orchestra.synth.llm.pipeline import SynthSettings, synthesize_llm

    settings = SynthSettings(domain=domain, out=out, tables=tables, records=records, tasks=tasks, seed=seed,
                             batch=batch, attempts=attempts, evolve=evolve, concurrency=concurrency, easy_k=easy_k)
    try:
        settings.check()
        common = {"endpoint_model": endpoint_model, "api_key_env": api_key_env, "prices": prices,
                  "temperature": temperature, "max_tokens": max_tokens, "timeout_s": timeout_s}
        main = resolve_model(model, base_url=base_url, **common)
        judge = resolve_model(judge_model, base_url=judge_base_url or base_url, flag="--judge-model",
                              **common) if judge_model else None
        strong = [resolve_model(m, base_url=strong_base_url or base_url, flag="--strong-model", **common)
                  for m in strong_model or ()]
        for m in (main, judge, *strong):
            if m is not None:
                check_reachable(m)
        result = asyncio.run(synthesize_llm(settings, main, judge, strong))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for stage, s in result.report["stages"].items():
        reasons = ", ".join(f"{r} {n}" for r, n in s["reasons"].items()) or "none"
        typer.echo(f"{stage}: {s['accepted']}/{s['items']} accepted ({s['cached']} from cache), "
                   f"{s['failed']} failed; rejected: {reasons}")
    st = result.stats
    typer.echo(f"{st['domain']}: {st['tasks']} tasks ({st['steps']} steps), {st['tools']} tools, "
               f"{st['model_calls']} model calls -> {result.folder} (report: rejections.json)")
