"""Reading a search corpus: one JSON object per line with `id` and `text`, optionally `title` and `url`.

Invariants
- Every document has a non-empty string `id` (unique in the corpus) and a string `text`; `title` and `url` are strings
  when present. Blank lines are skipped.
- A bad line (not JSON, not an object, a missing or mistyped field, a repeated id) is a `ConfigError` naming the file
  and the line number, raised before anything is indexed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestra.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Doc:
    """One document of a corpus."""

    id: str
    text: str
    title: str = ""
    url: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "text": self.text, "title": self.title, "url": self.url}


def read_corpus(path: str | Path) -> list[Doc]:
    """All documents of the JSONL file at `path`, in file order; any bad line raises a `ConfigError`."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"corpus {file} does not exist (expected a JSONL file with one {{\"id\", \"text\"}} "
                          "object per line)")
    docs: list[Doc] = []
    seen: set[str] = set()
    for number, line in _lines(file):
        doc = parse_doc(line, where=f"{file}:{number}")
        if doc.id in seen:
            raise ConfigError(f"{file}:{number}: id {doc.id!r} appears twice; ids must be unique")
        seen.add(doc.id)
        docs.append(doc)
    if not docs:
        raise ConfigError(f"corpus {file} has no documents")
    return docs


def parse_doc(line: str, *, where: str) -> Doc:
    """One corpus line as a `Doc`; `where` (file:line) prefixes the error message."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    doc_id = raw.get("id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise ConfigError(f"{where}: `id` must be a non-empty string")
    fields: dict[str, str] = {}
    for name, required in (("text", True), ("title", False), ("url", False)):
        value = raw.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: `{name}` must be a string" + (" (required)" if required else ""))
        fields[name] = value
    return Doc(id=doc_id, **fields)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    try:
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
