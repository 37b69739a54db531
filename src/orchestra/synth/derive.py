"""Tool derivation for procedural synthesis: an inferred schema plus the policy text -> `tools.json` and a compact policy.

Per table (see `orchestra.envs.tau.domains.derived` for what each kind does and each constraint means):
- `get_<entity>` always; `search_<table>` over its identifiers, references and enums (at most `MAX_SEARCH_FIELDS`);
- `update_<entity>_<field>` for at most `MAX_UPDATES` fields a customer may change: status-like enums (with
  `transitions`: every value may move to any other, except final values, which move nowhere), preference-like enums
  (meal, room, delivery method...) and contact fields (e-mail with the `email` rule, phone); every update must change
  its field (`changes_value`);
- `create_<entity>` and `delete_<entity>` for tables that reference a table of people or businesses (one with an
  e-mail or phone field; the child records are theirs: bookings, beneficiaries, reservations): create takes the references (`exists`), the status (non-final values only) and up to two number
  fields (`non_negative`); delete is refused while another table still references the record (`not_referenced`).
Final status values: a fixed vocabulary (cancelled, closed, refunded, ...) plus the values a policy sentence says
"cannot" change. A field the policy says cannot be changed ("Health insurance selection cannot be changed") gets no
update tool; the policy keeps that sentence, and the generator makes refusal tasks from it.
The derived policy (`derive_policy`) is the original's role sentence plus the rules above, under ~1,500 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestra.envs.tau.domains.derived import Constraint, Param, TableDef, ToolDef, ToolsFile
from orchestra.synth.schema_infer import DomainSchema, FieldInfo, TableInfo

MAX_SEARCH_FIELDS = 6
MAX_UPDATES = 3
FINAL_WORDS = frozenset({"cancelled", "canceled", "closed", "completed", "complete", "delivered", "expired", "final",
                         "refunded", "revoked", "deleted", "archived", "discontinued", "rejected", "declined",
                         "fulfilled", "filled", "returned", "voided", "void", "finished", "paid_off", "posted"})
PREFERENCE_WORDS = frozenset({"preference", "meal", "room", "bed", "delivery", "mode", "membership", "plan", "tier",
                              "seat", "diet"})
_PLACE_WORDS = ("country", "nation", "city", "municipality", "region", "state.", "province", "zip", "postal")
_CANNOT = re.compile(r"[^.\n]*\b(cannot|can't|can not|may not|must not)\b[^.\n]*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FrozenField:
    """A field the policy says cannot be changed, with the sentence that says so."""

    table: str
    field: str
    sentence: str


def derive_tools(schema: DomainSchema, policy: str) -> tuple[ToolsFile, tuple[FrozenField, ...]]:
    """The domain's derived tools, and the fields the policy freezes (see the module docstring)."""
    sentences = [m.group(0).strip(" -*\t") for m in _CANNOT.finditer(policy)]
    frozen = tuple(FrozenField(t.name, f.path, s) for t in schema.tables for f in t.fields
                   if f.enum and (s := _frozen_by(f, sentences)))
    tables = {t.name: TableDef(key=t.key, entity=t.entity, id_prefix=_prefix(t)) for t in schema.tables}
    referenced_by = {t.name: [(o.name, f.path) for o in schema.tables for f in o.references if f.references == t.name]
                     for t in schema.tables}
    tools: list[ToolDef] = []
    for table in schema.tables:
        tools.append(_lookup(table))
        search = _search(table)
        if search is not None:
            tools.append(search)
        frozen_here = {f.field for f in frozen if f.table == table.name}
        for field in updatable_fields(table, frozen_here):
            tools.append(_update(table, field, final_values(field, sentences)))
        if any(_has_contact(schema.table(f.references or "")) for f in table.references):
            tools.append(_create(table, sentences))
            tools.append(_delete(table, tuple(referenced_by[table.name])))
    return ToolsFile(domain=schema.name, tables=tables, tools=tuple(tools)), frozen


def derive_policy(schema: DomainSchema, tools: ToolsFile, frozen: tuple[FrozenField, ...], policy: str) -> str:
    """A compact policy: who the agent serves, then the rules the tools enforce and the policy's frozen fields."""
    role = next((line.strip() for line in policy.splitlines() if re.search(r"\bas an? .*agent", line, re.I)),
                f"As a {schema.name} agent, you help customers with their records.")
    role = role.rstrip(":") + ("." if role.endswith(":") else "")
    role = role.replace("help users.", "help customers with the records below.").split(". ")[0].rstrip(".") + "."
    lines = [f"# {schema.name.title()} agent policy", "", role, "",
             "- Look records up before acting; never make up information.",
             "- Refuse what the rules forbid and tell the customer why (the value that blocks it)."]
    finals = sorted({f"{t.table}: {c.field} {v}" for t in tools.tools for c in t.constraints
                     if c.type == "transitions" and c.allowed for v, nxt in c.allowed.items() if not nxt})
    if finals:
        lines.append("- Final states cannot be changed: " + "; ".join(finals[:6]) + ".")
    if any(c.type == "not_referenced" for t in tools.tools for c in t.constraints):
        lines.append("- A record still referenced by another cannot be deleted.")
    if any(c.type == "non_negative" for t in tools.tools for c in t.constraints):
        lines.append("- Amounts and counts are never negative.")
    lines += [f"- {f.sentence.rstrip('.')}." for f in frozen[:3]]
    return "\n".join(lines) + "\n"


def updatable_fields(table: TableInfo, frozen: set[str]) -> list[FieldInfo]:
    """The fields a customer may ask to change, status first (see the module docstring)."""
    def rank(f: FieldInfo) -> int:
        if f.path in frozen or f.references or f.path == table.key or any(w in f.path for w in _PLACE_WORDS):
            return 0
        last = f.path.rsplit(".", 1)[-1]
        if f.status_like:
            return 3
        if f.enum and PREFERENCE_WORDS & set(last.split("_")):
            return 2
        if f.type == "string" and not f.enum and ("email" in last or "phone" in last):
            return 1
        return 0

    ranked = sorted((f for f in table.fields if rank(f)), key=lambda f: (-rank(f), f.path))
    return ranked[:MAX_UPDATES]


def final_values(field: FieldInfo, sentences: list[str]) -> tuple[str, ...]:
    """Values of a status-like field that nothing may change (vocabulary, or named in a 'cannot' sentence)."""
    if not field.status_like or field.enum is None:
        return ()
    finals = [v for v in field.enum if v.lower() in FINAL_WORDS
              or any(re.search(rf"\b{re.escape(v)}\b[^.]*\bcannot be (changed|modified)", s, re.I) for s in sentences)]
    return tuple(finals) if len(finals) < len(field.enum) else ()


def _has_contact(table: TableInfo) -> bool:
    """A table of people or businesses (it has an e-mail or phone field): the records hanging off it are theirs."""
    return any("email" in f.path or "phone" in f.path for f in table.fields)


def param_name(path: str) -> str:
    return path.replace(".", "_").replace("-", "_")


def _frozen_by(field: FieldInfo, sentences: list[str]) -> str:
    label = " ".join(field.path.replace("_", " ").split(".")).lower()
    last = field.path.rsplit(".", 1)[-1].replace("_", " ").lower()
    for sentence in sentences:
        text = sentence.lower()
        if re.search(r"cannot (be changed|change|add)", text) and (label in text or (len(last) > 6 and last in text)):
            return sentence
    return ""


def _prefix(table: TableInfo) -> str:
    return re.sub(r"[^A-Z]", "", table.entity.upper())[:3] + "-NEW-"


def _example(field: FieldInfo | None) -> str:
    return f', e.g. "{field.distinct[0]}"' if field is not None and field.distinct else ""


def _key_param(table: TableInfo) -> Param:
    return Param(name=param_name(table.key), description=f"The {table.key}{_example(table.field(table.key))}.",
                 field=table.key)


def _lookup(table: TableInfo) -> ToolDef:
    return ToolDef(name=f"get_{table.entity}", kind="lookup", table=table.name, parameters=(_key_param(table),),
                   description=f"Get a {table.entity} by {table.key}.")


def _search(table: TableInfo) -> ToolDef | None:
    fields = [*table.identifiers, *table.references, *(f for f in table.fields if f.enum)][:MAX_SEARCH_FIELDS]
    if not fields:
        return None
    return ToolDef(name=f"search_{table.name}", kind="search", table=table.name, parameters=(
        Param(name="field", description="Field to match.", enum=tuple(f.path for f in fields)),
        Param(name="value", description="Value it equals (any case).")),
        description=f"Find {table.entity} ids by a field's value (at most 10).")


def _update(table: TableInfo, field: FieldInfo, finals: tuple[str, ...]) -> ToolDef:
    name = param_name(field.path.rsplit(".", 1)[-1])
    if name == param_name(table.key):
        name = f"new_{name}"
    value = Param(name=name, description=f"The new {field.label}{_example(field) if not field.enum else ''}.",
                  enum=field.enum, field=field.path)
    constraints = [Constraint(type="changes_value", field=field.path)]
    if field.status_like and field.enum:
        allowed = {v: () if v in finals else tuple(x for x in field.enum if x != v) for v in field.enum}
        constraints.append(Constraint(type="transitions", field=field.path, allowed=allowed))
    if "email" in field.path:
        constraints.append(Constraint(type="email", param=name))
    return ToolDef(name=f"update_{table.entity}_{param_name(field.path)}", kind="update", table=table.name,
                   field=field.path, parameters=(_key_param(table), value), constraints=tuple(constraints),
                   description=f"Set the {field.label} of a {table.entity}.")


def _create(table: TableInfo, sentences: list[str]) -> ToolDef:
    params, constraints = [], []
    for ref in table.references:
        name = param_name(ref.path)
        params.append(Param(name=name, description=f"The {ref.label} it belongs to{_example(ref)}.", field=ref.path))
        constraints.append(Constraint(type="exists", param=name, table=ref.references))
    status = next((f for f in table.fields if f.status_like and f.path.count(".") == 0), None)
    if status is not None and status.enum:
        finals = final_values(status, sentences)
        params.append(Param(name=param_name(status.path), description=f"The initial {status.label}.",
                            enum=tuple(v for v in status.enum if v not in finals), field=status.path))
    numbers = [f for f in table.fields if f.type in ("number", "integer") and "." not in f.path][:2]
    for f in numbers:
        params.append(Param(name=param_name(f.path), type=f.type, required=False, field=f.path,
                            description=f"The {f.label} (not negative){_example(f)}."))
        constraints.append(Constraint(type="non_negative", param=param_name(f.path)))
    return ToolDef(name=f"create_{table.entity}", kind="create", table=table.name, parameters=tuple(params),
                   constraints=tuple(constraints), description=f"Create a {table.entity}; returns it with its new "
                   f"{table.key}.")


def _delete(table: TableInfo, referenced_by: tuple[tuple[str, str], ...]) -> ToolDef:
    constraints = (Constraint(type="not_referenced", referenced_by=referenced_by),) if referenced_by else ()
    return ToolDef(name=f"delete_{table.entity}", kind="delete", table=table.name, parameters=(_key_param(table),),
                   constraints=constraints, description=f"Delete a {table.entity}.")
