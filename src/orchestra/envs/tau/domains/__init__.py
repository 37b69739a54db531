"""τ²-format domains: the per-episode database (`Db`), the `Domain` record each domain folder exports, and binding.

A domain is one folder (`retail/`, `telecom/`, `mock/`): typed functions over a `Db` whose first parameter is the
database, each listed as read or write in the folder's `DOMAIN` record, plus setup functions (τ² `initialization_actions`
that are not tools) and assertion functions (τ² `env_assertions`). Functions raise `ToolError` with a message the
agent can act on; the toolbox turns it into an error observation.

Db invariants
- Data is tables of records: `table[key] -> dict`, copy-on-write per record over a base shared by all episodes.
  Every mutation goes through `write`/`insert`/`delete` (which mark the record touched, for the ToolScale
  criterion); what `find`/`get`/`table` return is read-only. The tests check that the base stays pristine.
- `canonical_hash()` is a two-level sha256: of each table's (key, record digest) list in key order, then of the
  (table, table digest) list. Digests of tables and records never written come from the pristine snapshot's cache,
  so hashing costs the written tables only; `canonical_hash(full=True)` recomputes every digest (the tests check
  the two agree, and that the shared base is unchanged after every golden episode).
- `touched` holds the records written since `reset_touched()` (the environment calls it once the task's initial
  state is built, so setup writes do not count as the agent's).

Binding: `tool_template(fn, write=...)` builds the `Tool` once per domain (schema and validator without the `db`
parameter; write tools gain a `ToolContext` parameter); `bind(template, fn, db)` gives the per-episode tool. A bound
write tool is idempotent per call: the result is remembered under (tool, call id, arguments), so a call retried with
the same call id (RELIABILITY F12) returns the first result and applies once. Bound tools hold the db's lock for the
whole call and render their result to text inside it, so concurrent calls in one turn never see a half-applied write.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError
from orchestra.tools.spec import Tool, ToolContext, tool
from orchestra.tools.toolbox import render_content

Tables = dict[str, dict[str, dict[str, Any]]]
RecordKey = tuple[str, str]

DOMAIN_MODULES: dict[str, str] = {
    "retail": "orchestra.envs.tau.domains.retail.tools",
    "telecom": "orchestra.envs.tau.domains.telecom.tools",
    "mock": "orchestra.envs.tau.domains.mock.tools",
}
"""The one table of known domains (lazy imports: a domain's module loads when first asked for)."""


class ToolError(Exception):
    """A domain tool refused or failed; the message says why, for the agent to read."""


def record_digest(record: Any) -> str:
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Db:
    """One episode's database: shared base tables plus this episode's copies of the records it wrote.

    Copy-on-write at record level: `base` is the domain's pristine data, shared by every episode and never
    mutated; the first `write` of a record deep-copies it into this episode's overlay. Starting an episode costs
    nothing however large the domain, and the hash only re-digests the records written.
    """

    def __init__(self, base: Tables, *, base_digests: Digests | None = None):
        self._base = base
        self._base_digests = base_digests
        self._overlay: dict[str, dict[str, dict[str, Any] | None]] = {}
        self.touched: set[RecordKey] = set()
        self.applied: dict[tuple[str, str, str], str] = {}
        self.lock = threading.RLock()

    @property
    def dirty(self) -> set[RecordKey]:
        """Records written (or inserted, or deleted) since the base."""
        return {(t, k) for t, records in self._overlay.items() for k in records}

    def table(self, name: str) -> Mapping[str, dict[str, Any]]:
        """A table for reading (empty when absent). Never mutate what it returns."""
        base, overlay = self._base.get(name, {}), self._overlay.get(name)
        if not overlay:
            return base
        merged = {**base, **overlay}
        return {k: v for k, v in merged.items() if v is not None}

    def find(self, table: str, key: str) -> dict[str, Any] | None:
        """A record for reading, or None. Never mutate what it returns: use `write`."""
        overlay = self._overlay.get(table, {})
        if key in overlay:
            return overlay[key]
        return self._base.get(table, {}).get(key)

    def get(self, table: str, key: str, what: str | None = None) -> dict[str, Any]:
        """A record for reading, or `ToolError("<what> <key> not found")`."""
        record = self.find(table, key)
        if record is None:
            raise ToolError(f"{what or table} {key!r} not found")
        return record

    def write(self, table: str, key: str, what: str | None = None) -> dict[str, Any]:
        """This episode's own copy of a record, to mutate; marks it touched."""
        overlay = self._overlay.setdefault(table, {})
        if overlay.get(key) is None:
            overlay[key] = copy_json(self.get(table, key, what))
        self.touched.add((table, key))
        return overlay[key]  # type: ignore[return-value]

    def insert(self, table: str, key: str, record: dict[str, Any]) -> dict[str, Any]:
        if self.find(table, key) is not None:
            raise ToolError(f"{table} {key!r} already exists")
        self._overlay.setdefault(table, {})[key] = record
        self.touched.add((table, key))
        return record

    def delete(self, table: str, key: str) -> None:
        self.get(table, key)
        self._overlay.setdefault(table, {})[key] = None
        self.touched.add((table, key))

    def reset_touched(self) -> None:
        self.touched.clear()

    def canonical_hash(self, *, full: bool = False, exclude: frozenset[str] = frozenset()) -> str:
        """sha256 over (table, table digest) in table order, leaving out the `exclude` tables.

        A table's digest is the sha256 over (key, record digest) in key order. Tables this episode never wrote keep
        the base's cached digest; in written tables only the written records are re-digested. `full=True`
        recomputes everything from the records (the tests check both agree).
        """
        base = None if full else self._base_digests
        lines = []
        for table in sorted((set(self._base) | set(self._overlay)) - exclude):
            overlay = self._overlay.get(table, {})
            if base is not None and not overlay and table in base.tables:  # never written here
                digest = base.tables[table]
            else:
                digest = self._table_digest(table, overlay, base)
            lines.append(f"{table}\x00{digest}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def _table_digest(self, table: str, overlay: Mapping[str, Any], base: Digests | None) -> str:
        base_records = self._base.get(table, {})
        if base is not None and table in base.lines and all(overlay.get(k) is not None and k in base_records
                                                              for k in overlay):
            lines = list(base.lines[table])  # only records were rewritten: patch their lines in place
            for key, record in overlay.items():
                lines[base.positions[table][key]] = f"{key}\x00{record_digest(record)}"
        else:
            lines = []
            for key in sorted(set(base_records) | set(overlay)):
                record = overlay[key] if key in overlay else base_records[key]
                if record is not None:
                    lines.append(f"{key}\x00{record_digest(record)}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars), several times faster than `copy.deepcopy`."""
    if type(value) is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if type(value) is list:
        return [copy_json(v) for v in value]
    return value


@dataclass(frozen=True)
class Digests:
    """Digests of a pristine snapshot: each table's digest, and its (key, record digest) lines in key order."""

    tables: dict[str, str]
    lines: dict[str, list[str]]
    positions: dict[str, dict[str, int]]


def base_digests(tables: Tables) -> Digests:
    """Digests of every record and table of a pristine snapshot (computed once per domain folder)."""
    lines = {t: [f"{k}\x00{record_digest(rows[k])}" for k in sorted(rows)] for t, rows in tables.items()}
    positions = {t: {k: i for i, k in enumerate(sorted(rows))} for t, rows in tables.items()}
    digests = {t: hashlib.sha256("\n".join(rows).encode()).hexdigest() for t, rows in lines.items()}
    return Digests(digests, lines, positions)


@dataclass(frozen=True)
class Domain:
    """What one domain folder exports: how to load its data and the functions over it.

    `load(folder)` returns the agent's and the user's tables together (the user's device, notifications, ...).
    Tools are split four ways: the agent's read and write tools, and the user's (the customer's own device, used by
    the simulated user, or by the agent itself in solo mode). `setup` functions exist only for
    `initialization_actions`; `assertions` are τ² `env_assertions` (return a bool). `user_tables` are the tables of
    the user's side, left out of the DB hash (env assertions check them). `solo_note` is added to the solo prompt
    (e.g. that device tools act on the customer's phone).
    """

    name: str
    load: Callable[[Path], Tables]
    read_tools: tuple[Callable[..., Any], ...]
    write_tools: tuple[Callable[..., Any], ...]
    user_read_tools: tuple[Callable[..., Any], ...] = ()
    user_write_tools: tuple[Callable[..., Any], ...] = ()
    setup: tuple[Callable[..., Any], ...] = ()
    assertions: tuple[Callable[..., Any], ...] = ()
    user_tables: frozenset[str] = frozenset()
    solo_note: str = ""

    def agent_functions(self) -> dict[str, Callable[..., Any]]:
        return {f.__name__: f for f in (*self.read_tools, *self.write_tools)}

    def user_functions(self) -> dict[str, Callable[..., Any]]:
        return {f.__name__: f for f in (*self.user_read_tools, *self.user_write_tools)}

    def is_write(self, name: str) -> bool:
        return any(f.__name__ == name for f in (*self.write_tools, *self.user_write_tools))

    def function(self, name: str, side: str = "assistant") -> Callable[..., Any] | None:
        """A tool, setup or assertion function by name, looking on `side` ('assistant' or 'user') first."""
        first, second = (self.user_functions(), self.agent_functions()) if side == "user" else (
            self.agent_functions(), self.user_functions())
        extra = {f.__name__: f for f in (*self.setup, *self.assertions)}
        return first.get(name) or second.get(name) or extra.get(name)


def load_domain(name: str) -> Domain:
    """The `Domain` of a known domain name (see `DOMAIN_MODULES`)."""
    module = DOMAIN_MODULES.get(name)
    if module is None:
        raise ConfigError(f"tau domain {name!r}: unknown; known domains: {', '.join(sorted(DOMAIN_MODULES))}")
    return importlib.import_module(module).DOMAIN


def domain_for(folder: Path, name: str) -> Domain:
    """The domain of a folder: derived from its `tools.json` when it has one, else the hand-written `name`."""
    if (Path(folder) / "tools.json").is_file():
        from orchestra.envs.tau.domains.derived import load_derived

        return load_derived(Path(folder))
    return load_domain(name)


def read_data_file(folder: Path, stem: str) -> dict[str, Any] | None:
    """`<stem>.json` or `<stem>.toml` in `folder`, parsed; None when neither exists."""
    import tomllib

    for suffix in (".json", ".toml"):
        path = folder / f"{stem}{suffix}"
        if path.exists():
            with path.open("rb") as handle:
                return json.load(handle) if suffix == ".json" else tomllib.load(handle)
    return None


def keyed(records: Iterable[dict[str, Any]], field: str) -> dict[str, dict[str, Any]]:
    """A list of records as a table keyed by `field` (TOML domains store tables as arrays)."""
    return {str(r[field]): r for r in records}


def tool_template(fn: Callable[..., Any], *, write: bool, side: str = "assistant") -> Tool:
    """The tool for `fn(db, ...)`, built once per domain; `bind` gives each episode its own copy."""
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())[1:]
    hints = typing.get_type_hints(fn, include_extras=True)
    hints.pop(next(iter(signature.parameters)), None)
    if write:
        params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=ToolContext))
        hints["ctx"] = ToolContext

    def unbound(**kwargs: Any) -> Any:
        raise RuntimeError(f"{fn.__name__}: tool template used without binding it to a database")

    unbound.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    unbound.__annotations__ = hints
    unbound.__doc__ = fn.__doc__
    unbound.__name__ = fn.__name__
    template = tool(unbound, name=fn.__name__)
    return replace(template, metadata={"access": "write" if write else "read", "side": side})


def bind(template: Tool, fn: Callable[..., Any], db: Db, *, log: list[tuple[str, dict[str, Any]]] | None = None
         ) -> Tool:
    """`template` running `fn` on `db`. Successful calls are appended to `log` (name, arguments) when given."""
    write = template.metadata.get("access") == "write"

    async def call(**kwargs: Any) -> str:
        ctx = kwargs.pop("ctx", None)
        key = (template.name, ctx.call_id, json.dumps(kwargs, sort_keys=True, default=str)) if write and ctx else None
        with db.lock:
            if key is not None and key in db.applied:
                return db.applied[key]
            text = render_content(fn(db, **kwargs))
            if key is not None:
                db.applied[key] = text
            if log is not None:
                log.append((template.name, kwargs))
            return text

    return replace(template, fn=call)


def round_usd(value: float) -> float:
    """Money rounded to cents, as the domains store it."""
    return round(value + 0.0, 2)
