"""Where orchestra finds shared data and keeps its caches. Both are configurable by environment variable."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data() -> Path:
    """The shared data folder: $ORCHESTRA_DATA, else ../shared/data beside the working directory's repo."""
    env = os.environ.get("ORCHESTRA_DATA")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder.parent / "shared" / "data"
        if (folder / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return here.parent / "shared" / "data"


def cache_dir() -> Path:
    """$ORCHESTRA_CACHE, else ~/.cache/orchestra (converted model weights and other derived files)."""
    path = Path(os.environ.get("ORCHESTRA_CACHE") or Path.home() / ".cache" / "orchestra")
    path.mkdir(parents=True, exist_ok=True)
    return path
