"""Environments for tests, built through the registry as every layer above `envs/` builds them."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from orchestra.envs.registry import load_suite


def routerbench_env(path: str | Path, **config: Any) -> Any:
    """The RouterBench environment over `path` (the configured part's rows; stats from the train part)."""
    return load_suite({"name": "routerbench", "data": str(path), **config}).env


def model_call(name: str, model: str) -> str:
    """A hermes call of a RouterBench tool (`ask` or `answer`) on `model`, as a scripted orchestrator writes it."""
    return f'<tool_call>{{"name": "{name}", "arguments": {{"model": "{model}"}}}}</tool_call>'


def routerbench_head(data_dir: Path, folder: Path, rows: int) -> Path:
    """`folder` holding the first `rows` rows of each shared RouterBench CSV: real rows, every model, loads fast."""
    csv.field_size_limit(sys.maxsize)
    for source in sorted((data_dir / "routerbench").glob("*.csv")):
        with source.open(newline="") as src, (folder / source.name).open("w", newline="") as dst:
            writer = csv.writer(dst)
            for n, row in enumerate(csv.reader(src)):
                if n > rows:
                    break
                writer.writerow(row)
    return folder


def save_tiny_model(folder: Path) -> Path:
    """A tiny random Qwen3 and its tokenizer (with the ChatML template) saved as a model folder."""
    from orchestra.backends.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_model(tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
