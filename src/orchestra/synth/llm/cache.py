"""The on-disk, per-item cache every stage of the LLM pipeline writes: resumable by construction.

Layout: `<out>/.cache/<stage>/<digest>.json`, one file per item. The digest is the sha256 of (stage, the stage's
prompt text, the model's name and sampling, the item's id and inputs as canonical JSON), so the same item asked of the same
model with the same prompt finds its file, and anything that changes (an upstream result, a prompt edit, another
model) is a new item. An `Outcome` is written as soon as its item is done, atomically (a temporary file in the same
folder, fsync, rename): a run killed at any point leaves whole files or none, and a rerun skips every item whose file
is there. A file that does not parse (a crash from before this rule, a disk error) is treated as absent and redone.

Only final outcomes are stored: an item accepted with its value, or rejected with its reason (bad JSON, a schema
violation, code failing its checks...). An infrastructure failure (the endpoint down after retries) is not stored,
so a rerun asks again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pydantic

CACHE_DIR = ".cache"


class Outcome(pydantic.BaseModel):
    """One item's result. `value` is the accepted output (JSON); `reason` is set when rejected or failed."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    stage: str
    item: str
    """A readable id within the stage: 'orders', 'orders/2', 'task_0003'."""
    status: Literal["accepted", "rejected", "failed"]
    reason: str = ""
    """Short machine-countable reason ('bad_json', 'schema: ...'); the part before the first ':' is what reports
    count."""
    detail: str = ""
    value: Any = None
    cached: bool = False
    """True when this outcome was read from disk rather than produced in this run (not stored)."""

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    @property
    def reason_key(self) -> str:
        return self.reason.split(":", 1)[0].strip()


def digest(stage: str, prompt: str, model: str, inputs: Any) -> str:
    """The cache key of one item (see the module docstring)."""
    text = json.dumps([stage, prompt, model, inputs], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class StageCache:
    """Read and write `Outcome`s under `<root>/.cache`; counts what it served from disk and what it wrote."""

    def __init__(self, root: Path):
        self.root = Path(root) / CACHE_DIR
        self.hits: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.json"

    def get(self, stage: str, key: str) -> Outcome | None:
        """The stored outcome, or None (absent or unreadable: the item is redone)."""
        path = self.path(stage, key)
        try:
            outcome = Outcome.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None
        self.hits[stage] += 1
        return outcome.model_copy(update={"cached": True})

    def put(self, key: str, outcome: Outcome) -> None:
        """Store a final outcome atomically; failed ones are never stored (see the module docstring)."""
        if outcome.status == "failed":
            return
        path = self.path(outcome.stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, outcome.model_dump_json(exclude={"cached"}))
        self.writes[outcome.stage] += 1


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
