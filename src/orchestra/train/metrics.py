"""MetricsLogger: training metrics as JSONL, one object per line, appended and flushed line by line.

Invariants
- Each `log` writes one complete line and flushes it to the operating system, so a kill -9 loses nothing already
  logged (a power cut may lose what the OS had not yet written; checkpoints, not metrics, are fsynced).
- A torn last line (a crash mid-write) is dropped when the file is read or reopened, never merged with the next line.
- Resuming from the checkpoint of step k (`resume_after_step=k`) drops the lines of steps after k, which the
  resumed run logs again; the file then reads as if the run had never stopped.
- Values must be JSON-serializable; tensors and numpy scalars are written as numbers (`.item()`). Non-finite floats
  are written as Python's json writes them (NaN, Infinity), so a diverged loss stays visible.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any


class MetricsLogger:
    """Appends `{"step": step, **values}` lines to `path`."""

    def __init__(self, path: str | Path, *, resume_after_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            records = read_metrics(self.path)
            kept = records if resume_after_step is None else [
                r for r in records if r.get("step", 0) <= resume_after_step]
            if len(kept) < len(records) or not _ends_cleanly(self.path):
                _rewrite(self.path, kept)
        # The logger owns the file for its lifetime; `close()` (or the with-block) releases it.
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        line = json.dumps({"step": step, **values}, default=_plain)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics file; a torn last line is skipped, corruption elsewhere raises ValueError."""
    text = Path(path).read_text(encoding="utf-8")
    # What follows the last newline is empty, or a line a crash cut short: drop it.
    lines = text.split("\n")[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from None
    return records


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace the file's content atomically (temp file, fsync, rename)."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def _ends_cleanly(path: Path) -> bool:
    """True for an empty file or one whose last byte is a newline (no torn line to drop)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"metric value of type {type(value).__name__} is not JSON-serializable")
