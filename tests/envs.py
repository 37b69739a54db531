"""Environments for tests, built through the registry as every layer above `envs/` builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestra.envs.registry import load_suite


def routerbench_env(path: str | Path, **config: Any) -> Any:
    """The RouterBench environment over `path` (the configured part's rows; stats from the train part)."""
    return load_suite({"name": "routerbench", "data": str(path), **config}).env
