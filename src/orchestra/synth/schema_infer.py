"""Schema inference for procedural synthesis: tables, key fields, field types, enums and references of a db.json.

Input: a JSON object of tables, each a dict `key -> record` (or a list of records). Per table:
- key field: the top-level field whose value equals the record's key in (>= 80% of) the records (a list table: the first
  `*_id`/`*_ref`/`*_key`/`*_number` field unique over its records). A table with none is a `ConfigError`.
- fields: the scalar leaves of the record view (`orchestra.envs.tau.domains.derived.record_view`: collections, long
  lists and lists of records left out), as dotted paths, with their JSON type, how many records have them and their
  distinct values.
- enums: string fields with 2..`MAX_ENUM` distinct values, each value seen twice on average (a status, a type);
- references: string fields whose values are (>= 90%) keys of another table;
- identifiers: string fields unique per record that a customer could know (e-mail, phone, name): search targets.
Entity names come from the key field (`client_id` -> client), else the singular table name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains.derived import get_path, record_view
from orchestra.errors import ConfigError

MAX_ENUM = 8
KEY_AGREEMENT = 0.8
KEY_SUFFIXES = ("_id", "_ref", "_key", "_number", "_code")
_GENERIC_STEMS = {"id", "key", "ref", "group", "code", "number", "item"}
_VAGUE = frozenset({"status", "state", "type", "method", "mode", "given", "family", "value", "amount", "current",
                    "available", "code", "email", "phone", "level", "international", "domestic", "total"})
"""Last path parts that need their parent to mean something to a customer ('kyc.status' -> 'kyc status')."""
_ID_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _\-]{1,24}$")


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One scalar leaf of a table's records."""

    path: str
    type: str
    """JSON type: string, number, integer or boolean."""
    present: int
    distinct: tuple[str, ...]
    """Distinct values as text, sorted (at most MAX_ENUM + 1 kept when there are more)."""
    unique: bool
    enum: tuple[str, ...] | None = None
    references: str | None = None
    label: str = ""
    """How a customer names it: the last part of the path ('name.first_name' -> 'first name'), with its parent when
    another field of the table ends the same ('address.city' and 'arena.address.city') or the part alone is vague
    ('contact.email' -> 'contact email')."""

    @property
    def status_like(self) -> bool:
        last = self.path.rsplit(".", 1)[-1]
        return self.enum is not None and ("status" in last or last == "state")


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str
    key: str
    entity: str
    size: int
    fields: tuple[FieldInfo, ...]

    def field(self, path: str) -> FieldInfo | None:
        return next((f for f in self.fields if f.path == path), None)

    @property
    def references(self) -> tuple[FieldInfo, ...]:
        return tuple(f for f in self.fields if f.references)

    @property
    def identifiers(self) -> tuple[FieldInfo, ...]:
        """Unique, customer-known string fields (e-mail, phone, name), for search-then-lookup tasks."""
        return tuple(f for f in self.fields if f.unique and f.type == "string" and not f.references
                     and f.path != self.key and any(w in f.path for w in ("email", "phone", "name", "title")))


@dataclass(frozen=True, slots=True)
class DomainSchema:
    name: str
    tables: tuple[TableInfo, ...]

    def table(self, name: str) -> TableInfo:
        return next(t for t in self.tables if t.name == name)


def load_db(path: Path) -> dict[str, Any]:
    """A db.json as an object of tables, or a one-line `ConfigError` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"database {path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"database {path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"database {path}: expected a JSON object of tables")
    return data


def infer_schema(name: str, db: Mapping[str, Any], *, where: str = "database") -> DomainSchema:
    """The tables of `db` with keys, fields, enums and references (see the module docstring)."""
    keyed: dict[str, dict[str, dict[str, Any]]] = {}
    keys: dict[str, str] = {}
    for table, rows in db.items():
        if not isinstance(rows, dict | list) or not rows:
            continue  # scalars and empty tables carry no records to act on
        key = _key_field(table, rows, where)
        keys[table] = key
        keyed[table] = rows if isinstance(rows, dict) else {str(r[key]): r for r in rows}
    if not keyed:
        raise ConfigError(f"{where}: no tables of records")
    key_sets = {t: set(rows) for t, rows in keyed.items()}
    tables = []
    for table, rows in keyed.items():
        fields = tuple(_fields(rows, keys[table], table, key_sets))
        tables.append(TableInfo(table, keys[table], _entity(table, keys[table]), len(rows), fields))
    return DomainSchema(name, tuple(tables))


def _key_field(table: str, rows: dict | list, where: str) -> str:
    records = list(rows.values()) if isinstance(rows, dict) else rows
    if not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"{where}: table {table!r} has records that are not objects")
    first = records[0]
    if isinstance(rows, dict):
        for field in first:  # a few records of the real data disagree with their key: tasks skip those
            if sum(str(r.get(field)) == k for k, r in rows.items()) >= KEY_AGREEMENT * len(rows):
                return field
    else:
        for field in first:
            values = [r.get(field) for r in records]
            if field.endswith(KEY_SUFFIXES) and None not in values and len(set(map(str, values))) == len(values):
                return field
    raise ConfigError(f"{where}: table {table!r} has no key field (no field equals each record's key)")


def _entity(table: str, key: str) -> str:
    stem = key
    for suffix in KEY_SUFFIXES:
        if key.endswith(suffix):
            stem = key[: -len(suffix)]
            break
    if stem and stem not in _GENERIC_STEMS and stem != key:
        return stem
    singular = table[:-3] + "y" if table.endswith("ies") else table[:-1] if table.endswith("s") else table
    return singular


def _fields(rows: dict[str, dict[str, Any]], key: str, table: str, key_sets: dict[str, set[str]]) -> list[FieldInfo]:
    values: dict[str, list[Any]] = {}
    for record in rows.values():
        for path, value in _leaves(record_view(record)):
            values.setdefault(path, []).append(value)
    n = len(rows)
    out = []
    for path, seen in values.items():
        kinds = {_json_type(v) for v in seen if v is not None}
        if kinds == {"integer", "number"}:
            kinds = {"number"}
        if len(kinds) != 1:
            continue  # mixed or always-null fields cannot be typed
        kind = kinds.pop()
        text = [str(v) for v in seen if v is not None]
        distinct = sorted(set(text))
        unique = len(distinct) == len(text) == n
        enum = None
        if kind == "string" and path != key and 2 <= len(distinct) <= MAX_ENUM and len(text) >= 2 * len(distinct):
            enum = tuple(distinct)
        ref = None
        if kind == "string" and path != key and text:
            ref = next((t for t, ks in sorted(key_sets.items()) if t != table
                        and sum(v in ks for v in text) >= 0.9 * len(text) and _ID_LIKE.match(text[0])), None)
        out.append(FieldInfo(path, kind, len(text), tuple(distinct[: MAX_ENUM + 1]), unique,
                             enum=None if ref else enum, references=ref, label=_label(path, values)))
    return out


def _label(path: str, paths: Mapping[str, Any]) -> str:
    parts = path.split(".")
    clash = sum(p.split(".")[-1] == parts[-1] for p in paths) > 1
    words = parts[-2:] if (clash or parts[-1] in _VAGUE) and len(parts) > 1 else parts[-1:]
    return " ".join(w.replace("_", " ").replace("-", " ") for w in words).strip()


def _leaves(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict):
            out += _leaves(item, path + ".")
        elif not isinstance(item, list):
            out.append((path, item))
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def field_value(record: Mapping[str, Any], path: str) -> Any:
    """A field of a record by dotted path (None when absent)."""
    return get_path(record, path)
