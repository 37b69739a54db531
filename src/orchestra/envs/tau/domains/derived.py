"""Derived domains: τ² domain tools built from a declarative `tools.json` over the folder's `db.json`.

A synthesized domain folder (`orchestra synth procedural`) carries no Python: its tools are described in
`tools.json` (format `orchestra.derived-tools`, version 1) and built here into typed functions over a `Db`, so the
`tau` environment runs them like a hand-written domain. Five kinds of tool, each over one table of records keyed by
its key field:
- lookup `get_<entity>(<key>)`: the record's view (below);
- search `search_<table>(field, value)`: keys of the records whose field equals the value (case-insensitive, at most
  `SEARCH_LIMIT`, in key order);
- update `update_<entity>_<field>(<key>, <field>)`: set one field of one record;
- create `create_<entity>(...)`: insert a record with a new key `<prefix><n>` (n = the table's size plus one, the
  next free one), so replays of the same calls give the same database;
- delete `delete_<entity>(<key>)`.

Constraints (raised as `ToolError`, nothing changed): `exists` (a parameter names an existing record of a table),
`non_negative` (a number parameter is >= 0), `transitions` (an update's field may only move from a value to the
values listed for it; a value listed with none is final), `changes_value` (an update must change the field),
`email` (contains one "@" with text on both sides), `not_referenced` (a delete is refused while another table's
field still names the record).

A record's view is what lookups return and what tasks may ask about: the record without its collections (a dict whose
values are all dicts, e.g. seat maps keyed by seat, or one with more than `MAX_VIEW_KEYS` keys), lists of more than
`MAX_VIEW_LIST` items, and lists of dicts, so observations stay short for small orchestrators.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic

from orchestra.envs.tau.domains import Db, Domain, Tables, ToolError
from orchestra.errors import ConfigError

FORMAT = "orchestra.derived-tools"
VERSION = 1
SEARCH_LIMIT = 10
MAX_VIEW_KEYS = 16
MAX_VIEW_LIST = 8
ToolKind = Literal["lookup", "search", "create", "update", "delete"]
ParamType = Literal["string", "number", "integer", "boolean"]


class Param(pydantic.BaseModel):
    """One parameter of a derived tool. `field` is the record path it reads or writes (dotted), if any."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    name: str
    type: ParamType = "string"
    description: str
    required: bool = True
    enum: tuple[str, ...] | None = None
    field: str | None = None


class Constraint(pydantic.BaseModel):
    """A rule a write tool enforces (see the module docstring for each `type`)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    type: Literal["exists", "non_negative", "transitions", "changes_value", "email", "not_referenced"]
    param: str | None = None
    table: str | None = None
    field: str | None = None
    allowed: dict[str, tuple[str, ...]] | None = None
    referenced_by: tuple[tuple[str, str], ...] = ()
    source: str = "data"
    """Where the rule comes from: `data` (inferred from the records) or the policy sentence that states it."""


class ToolDef(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    name: str
    kind: ToolKind
    table: str
    description: str
    parameters: tuple[Param, ...]
    field: str | None = None
    """The field an update tool sets."""
    constraints: tuple[Constraint, ...] = ()


class TableDef(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    key: str
    entity: str
    id_prefix: str


class ToolsFile(pydantic.BaseModel):
    """The whole `tools.json`."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    format: Literal["orchestra.derived-tools"] = FORMAT
    version: Literal[1] = VERSION
    domain: str
    tables: dict[str, TableDef]
    tools: tuple[ToolDef, ...]


def load_derived(folder: Path) -> Domain:
    """The `Domain` of a folder with `tools.json` (cached per folder and file contents)."""
    path = Path(folder).resolve() / "tools.json"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"derived domain {path}: cannot read ({exc.strerror})") from None
    return _build(str(path), text)


def load_tables(folder: Path, tables: Mapping[str, TableDef]) -> Tables:
    """db.json as `table[key] -> record`; tables stored as lists are keyed by their key field."""
    path = Path(folder) / "db.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolError(f"{path}: not readable JSON ({exc})") from None
    out: Tables = {}
    for name, table in tables.items():
        rows = data.get(name)
        if isinstance(rows, list):
            rows = {str(r[table.key]): r for r in rows}
        if not isinstance(rows, dict):
            raise ToolError(f"{path}: table {name!r} missing")
        out[name] = rows
    return out


def record_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without collections, long lists and lists of records (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            if is_collection(value):
                continue
            value = record_view(value)
        elif isinstance(value, list) and (len(value) > MAX_VIEW_LIST or any(isinstance(v, dict | list)
                                                                          for v in value)):
            continue
        out[key] = value
    return out


def is_collection(value: Mapping[str, Any]) -> bool:
    """A dict of records keyed by id (all values dicts), or one too wide to show."""
    return len(value) > MAX_VIEW_KEYS or (bool(value) and all(isinstance(v, dict) for v in value.values()))


def get_path(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def set_path(record: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(record.get(part), dict):
            record[part] = {}
        record = record[part]
    record[last] = value


# ---- building the functions --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _build(path: str, text: str) -> Domain:
    try:
        spec = ToolsFile.model_validate_json(text)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"derived domain {path}: {where}: {first['msg']}") from None
    return build_domain(spec, where=path)


def build_domain(spec: ToolsFile, *, where: str = "tools.json") -> Domain:
    """The `Domain` of a tools spec: one typed function per tool; `load(folder)` reads the folder's db.json."""
    reads, writes = [], []
    for tool in spec.tools:
        if tool.table not in spec.tables:
            raise ConfigError(f"derived domain {where}: tool {tool.name} names unknown table {tool.table!r}")
        fn = _function(tool, spec.tables[tool.table])
        (reads if tool.kind in ("lookup", "search") else writes).append(fn)
    return Domain(name=spec.domain, load=lambda f: load_tables(f, spec.tables), read_tools=tuple(reads),
                  write_tools=tuple(writes))


_PY_TYPES: dict[str, type] = {"string": str, "number": float, "integer": int, "boolean": bool}


def _function(tool: ToolDef, table: TableDef) -> Callable[..., Any]:
    body = {"lookup": _lookup, "search": _search, "update": _update, "create": _create, "delete": _delete}[tool.kind]

    def fn(db: Db, **kwargs: Any) -> Any:
        return body(db, tool, table, kwargs)

    params = [inspect.Parameter("db", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"db": Db}
    for p in tool.parameters:
        hint: Any = Literal[p.enum] if p.enum else _PY_TYPES[p.type]  # type: ignore[valid-type]
        if not p.required:
            hint = hint | None
        annotations[p.name] = hint
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=hint,
                                        default=inspect.Parameter.empty if p.required else None))
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    fn.__name__ = fn.__qualname__ = tool.name
    args = "\n".join(f"    {p.name}: {p.description}" for p in tool.parameters)
    fn.__doc__ = f"{tool.description}\n\nArgs:\n{args}\n" if args else tool.description
    return fn


def _key_param(tool: ToolDef, table: TableDef) -> str:
    return next(p.name for p in tool.parameters if p.field == table.key)


def _lookup(db: Db, tool: ToolDef, table: TableDef, kwargs: dict[str, Any]) -> dict[str, Any]:
    return record_view(db.get(tool.table, str(kwargs[_key_param(tool, table)]), table.entity))


def _search(db: Db, tool: ToolDef, table: TableDef, kwargs: dict[str, Any]) -> dict[str, Any]:
    field, wanted = kwargs["field"], str(kwargs["value"]).strip().lower()
    keys = [k for k, r in sorted(db.table(tool.table).items()) if _text(get_path(r, field)) == wanted]
    return {f"{table.entity}_ids": keys[:SEARCH_LIMIT], "more": max(0, len(keys) - SEARCH_LIMIT)}


def _update(db: Db, tool: ToolDef, table: TableDef, kwargs: dict[str, Any]) -> dict[str, Any]:
    key = str(kwargs[_key_param(tool, table)])
    field = tool.field or ""
    value = kwargs[next(p.name for p in tool.parameters if p.field == field)]
    current = get_path(db.get(tool.table, key, table.entity), field)
    _check(db, tool, table, kwargs, current=current, new=value)
    set_path(db.write(tool.table, key, table.entity), field, value)
    return record_view(db.get(tool.table, key))


def _create(db: Db, tool: ToolDef, table: TableDef, kwargs: dict[str, Any]) -> dict[str, Any]:
    _check(db, tool, table, kwargs)
    rows = db.table(tool.table)
    n = len(rows) + 1
    while f"{table.id_prefix}{n}" in rows:
        n += 1
    key = f"{table.id_prefix}{n}"
    record: dict[str, Any] = {table.key: key}
    for p in tool.parameters:
        if p.field and kwargs.get(p.name) is not None:
            set_path(record, p.field, kwargs[p.name])
    db.insert(tool.table, key, record)
    return record_view(record)


def _delete(db: Db, tool: ToolDef, table: TableDef, kwargs: dict[str, Any]) -> dict[str, Any]:
    key = str(kwargs[_key_param(tool, table)])
    db.get(tool.table, key, table.entity)
    _check(db, tool, table, kwargs)
    db.delete(tool.table, key)
    return {"deleted": key}


def _check(db: Db, tool: ToolDef, table: TableDef, kwargs: Mapping[str, Any], *, current: Any = None,
           new: Any = None) -> None:
    """Raise `ToolError` for the first violated constraint of `tool` (the message says what to do instead)."""
    for c in tool.constraints:
        value = kwargs.get(c.param) if c.param else None
        if c.type == "exists" and value is not None and db.find(c.table or "", str(value)) is None:
            raise ToolError(f"{c.param} {value!r}: no such record in {c.table}")
        if c.type == "non_negative" and value is not None and value < 0:
            raise ToolError(f"{c.param} must not be negative (got {value})")
        if c.type == "email" and value is not None and not _is_email(str(value)):
            raise ToolError(f"{c.param} {value!r} is not a valid email address")
        if c.type == "changes_value" and _text(current) == _text(new):
            raise ToolError(f"{table.entity} {tool.field} is already {current!r}: nothing to change")
        if c.type == "transitions" and c.allowed is not None and current is not None:
            allowed = c.allowed.get(str(current))
            if allowed is not None and new not in allowed:
                hint = f"allowed: {', '.join(allowed)}" if allowed else "it can no longer be changed"
                raise ToolError(f"{table.entity} {tool.field} is {current!r} and cannot become {new!r} ({hint})")
        if c.type == "not_referenced":
            key = str(kwargs[_key_param(tool, table)])
            for other, field in c.referenced_by:
                user = next((k for k, r in sorted(db.table(other).items()) if _text(get_path(r, field)) ==
                             key.lower()), None)
                if user is not None:
                    raise ToolError(f"{table.entity} {key!r} is still referenced by {other} {user!r}")


def _is_email(text: str) -> bool:
    local, at, domain = text.partition("@")
    return bool(at and local and "." in domain and "@" not in domain and " " not in text)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip().lower()
