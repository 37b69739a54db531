"""The results store of one evaluation run: `items.jsonl` (one line per finished item), `config.json`, `results.json`.

Invariants (RELIABILITY R1-R4)
- An item line is appended with one `write` on an `O_APPEND` descriptor, then flushed and fsynced, before the item
  counts as done: a line is either whole on disk or, after a crash mid-write, a truncated last line.
- Reading skips a truncated or unparseable *last* line (R3) and cuts it off the file before anything is appended, so
  a new line is never glued to half of an old one; a broken line anywhere else is an error naming it.
- Every line carries the run's config hash. Opening a store whose items were made under another hash is refused
  (`ConfigError`) unless `force=True`, which moves the old items aside (`items.<hash>.jsonl.bak`) and starts afresh:
  one store never mixes settings (R4). A run that was moved is not another run: when the caller's `same_run` says
  the stored config and the new one differ only where files were moved (their content digests unchanged), the
  items are re-stamped with the new hash (written to a temporary file, fsynced, renamed over the old) and kept.
- Ids are unique: an id already in the store is never appended again, and a reader keeps the first line of an id.
- `results.json` and `config.json` are written to a temporary file, fsynced, then renamed over the old file, so a
  crash leaves either the old or the new file, never a torn one (R2).
- One writer per run directory: `open` takes an exclusive `flock` on `.lock`, released by the kernel even on kill -9.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError

ITEMS_FILE = "items.jsonl"
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"


class ResultStore:
    """The files of one run directory. Use `open(...)` before `append`, and `close()` (or `with`) after."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.items_path = self.run_dir / ITEMS_FILE
        self.results_path = self.run_dir / RESULTS_FILE
        self.config_path = self.run_dir / CONFIG_FILE
        self._lock_fd: int | None = None
        self._ids: set[str] = set()
        self._config_hash: str | None = None

    def open(self, config: Mapping[str, Any], config_hash: str, *, force: bool = False,
             same_run: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] | None = None,
             ) -> dict[str, dict[str, Any]]:
        """Lock the directory, check the config, repair a truncated tail; return the records already done, by id.

        `same_run(stored config, config)`: whether items stored under another hash are this run's all the same (a
        checkpoint or data folder moved, its digest unchanged); they are then re-stamped and kept."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        records = read_items(self.items_path, repair=True)
        stale = sorted({r.get("config_hash") for r in records} - {config_hash}, key=str)
        stored_hash, stored_config = self._stored()
        plain = json.loads(json.dumps(config, default=str))
        moved = bool(stale) and stale == [stored_hash] and same_run is not None and not force
        if moved and same_run(stored_config, plain):
            records = [{**r, "config_hash": config_hash} for r in records]
            _atomic_write_lines(self.items_path, records)
            stale = []
        if stale:
            if not force:
                self.close()
                changed = changed_inputs(stored_config, plain)
                raise ConfigError(
                    f"{self.run_dir} holds {len(records)} results made with other inputs (changed: "
                    f"{', '.join(changed) or 'unknown'}; config hash {', '.join(map(str, stale))}, now "
                    f"{config_hash}); use another output folder, or --force to move the old results aside and "
                    "start again"
                )
            self.items_path.rename(self.run_dir / f"items.{stale[0]}.jsonl.bak")
            records = []
        atomic_write_json(self.config_path, {"config_hash": config_hash, "config": dict(config)})
        self._config_hash = config_hash
        done = {r["id"]: r for r in records}
        self._ids = set(done)
        return done

    def _stored(self) -> tuple[str | None, Mapping[str, Any]]:
        """The config hash and config of the run's `config.json` (None and {} when it is missing or unreadable)."""
        try:
            stored = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            return None, {}
        return stored.get("config_hash"), stored.get("config") or {}

    def append(self, record: Mapping[str, Any]) -> bool:
        """Append one finished item (one write + fsync). False, and nothing written, when its id is already in."""
        if self._config_hash is None:
            raise RuntimeError("ResultStore.append before open")
        if record.get("config_hash") != self._config_hash:
            raise ValueError("record's config_hash differs from the store's")
        item_id = str(record["id"])
        if item_id in self._ids:
            return False
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()
        fd = os.open(self.items_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):  # a short write to a regular file means the disk is full: fail loudly
                raise OSError(f"short write to {self.items_path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._ids.add(item_id)
        return True

    def records(self) -> list[dict[str, Any]]:
        return read_items(self.items_path, repair=False)

    def write_results(self, results: Mapping[str, Any]) -> None:
        atomic_write_json(self.results_path, results)

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock(self) -> None:
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another evaluation is writing to {self.run_dir}; wait for it or use another folder") from None
        self._lock_fd = fd


def read_items(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The item records of `path` (first line per id). A broken last line is skipped, and with `repair` cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    good_end = 0
    for start, end, raw in _lines(data):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError("not an item record")
        except ValueError as exc:
            if not data[end + 1:].strip():
                break  # the last line, cut short by a crash mid-write: skipped, and redone by the caller
            raise ConfigError(f"{path}: line starting at byte {start} is broken ({exc}); fix or remove it") from None
        good_end = end
        if record["id"] not in seen:
            seen.add(record["id"])
            records.append(record)
    whole = data[:good_end] + (b"\n" if good_end else b"")
    if repair and data != whole:
        # Cut what follows the last whole record and end the file with a newline, so the next append starts a line.
        with path.open("r+b") as handle:
            handle.truncate(good_end)
            handle.seek(good_end)
            if good_end:
                handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    return records


def _lines(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, content) per non-blank line; `end` is the index of its newline (len(data) for a tail)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        if data[start:end].strip():
            yield start, end, data[start:end]
        start = end + 1


def atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write `payload` as JSON to `path` through a temporary file and a rename (old or new file, never torn)."""
    _atomic_write(path, json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _atomic_write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    """`records` as the JSON lines of `path`, replacing it whole (old or new file, never torn)."""
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def changed_inputs(old: Any, new: Any, prefix: str = "", limit: int = 6) -> list[str]:
    """Dotted paths where two JSON configs differ (the first `limit`, shallowest first within each branch)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            elif old[key] != new[key]:
                out += changed_inputs(old[key], new[key], path, limit)
            if len(out) >= limit:
                break
        return out[:limit]
    return [] if old == new else [prefix or "(config)"]

