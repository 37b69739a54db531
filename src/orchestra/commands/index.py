"""`orchestra index build|serve|query`: make a search index from a JSONL corpus, serve it over HTTP, query it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestra.errors import ConfigError

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(
    corpus: Annotated[Path, typer.Option("--corpus", help="JSONL file: one {id, text, title?, url?} per line.")],
    out: Annotated[Path, typer.Option("--out", help="Index folder to write (an existing index is replaced).")],
    dense: Annotated[bool, typer.Option("--dense", help="Also embed every document with all-MiniLM-L6-v2 "
                                                         "(needs `orchestra[search-dense]`).")] = False,
) -> None:
    """Index a corpus with BM25 (and optionally dense embeddings for hybrid search)."""
    from orchestra.search.index import build_index

    try:
        report = build_index(corpus, out, dense=dense)
    except ConfigError as exc:
        _fail(exc)
    kind = "bm25 + dense" if report.dense else "bm25"
    typer.echo(f"indexed {report.n_docs} documents ({kind}) into {report.path} in {report.build_s:.2f} s")


@app.command("serve")
def serve(
    index: Annotated[Path, typer.Argument(help="Index folder made by `orchestra index build`.")],
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: this machine only).")] = "127.0.0.1",
) -> None:
    """Serve an index over HTTP (`POST /search`) for many concurrent rollouts."""
    from orchestra.search.index import SearchIndex
    from orchestra.search.service import serve as serve_index

    try:
        loaded = SearchIndex.load(index)
    except ConfigError as exc:
        _fail(exc)
    if loaded.has_dense:
        import torch

        # Query embeddings are tiny: one intra-op thread is as fast on an idle machine and 20x faster on a busy one
        # (measured on 2 cores: 10 ms against 209 ms per query); concurrency comes from batching instead.
        torch.set_num_threads(1)
    typer.echo(f"serving {index} ({len(loaded.docs)} documents) on http://{host}:{port} (POST /search)", err=True)
    serve_index(loaded, host=host, port=port)


@app.command("query")
def query(
    text: Annotated[str, typer.Argument(help="The query.")],
    index: Annotated[Path | None, typer.Option("--index", help="Index folder.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Search service URL instead of a folder.")] = None,
    k: Annotated[int, typer.Option("--k", help="Number of hits.", min=1, max=100)] = 5,
    mode: Annotated[str | None, typer.Option("--mode", help="bm25, dense or hybrid.")] = None,
) -> None:
    """Print the top hits for one query as JSON lines."""
    from orchestra.search.index import SearchIndex

    if (index is None) == (url is None):
        _fail(ConfigError("give exactly one of --index or --url"))
    if mode not in (None, "bm25", "dense", "hybrid"):
        _fail(ConfigError(f"--mode: {mode!r} is not one of bm25, dense, hybrid"))
    try:
        if index is not None:
            hits = SearchIndex.load(index).search(text, k, mode)  # type: ignore[arg-type]
        else:
            from orchestra.search.client import SearchClient, SearchServiceError

            try:
                hits = SearchClient(url or "").search_many_sync([text], k, mode)[0]  # type: ignore[arg-type]
            except SearchServiceError as exc:
                _fail(exc)
    except (ConfigError, ValueError) as exc:
        _fail(exc)
    for hit in hits:
        typer.echo(json.dumps(hit.to_json(), ensure_ascii=False))


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)
