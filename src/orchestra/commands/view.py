"""`orchestra view RUN_DIR`: the trajectory viewer (`orchestra.serve.viewer`) over a run folder, on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestra.errors import ConfigError


def view(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (items.jsonl or trajectories.jsonl) or such a file.")],
    port: Annotated[int, typer.Option(help="Port to bind on 127.0.0.1.")] = 8002,
) -> None:
    """Browse a run's episodes at http://127.0.0.1:PORT/trajectories."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    from orchestra.commands.serve import _configure_logging, _run
    from orchestra.serve.auth import KeyRing
    from orchestra.serve.http import guarded
    from orchestra.serve.runs import load_run
    from orchestra.serve.viewer import viewer_router

    _configure_logging()
    try:
        count = len(load_run(run_dir))  # fail now, naming the folder, rather than on the first page
    except ConfigError as exc:
        typer.echo(f"config error: {exc}", err=True)
        raise typer.Exit(2) from None
    app = FastAPI(title="orchestra viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(viewer_router(lambda request: load_run(run_dir), f"orchestra: {run_dir.name or run_dir}"))

    @app.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/trajectories")

    typer.echo(f"{count} episodes: http://127.0.0.1:{port}/trajectories", err=True)
    _run(guarded(app, KeyRing({}), 100_000), "127.0.0.1", port, 5.0)
