"""Which tools a generated domain gets, read off its schema: each one a declared `ToolDef` plus the contract the
model's code must meet.

Per table (the same five kinds as `orchestra.envs.tau.domains.derived`):
- `get_<entity>(<key>)`: the record, ToolError when it does not exist;
- `search_<table>(field, value)`: keys of the records whose field equals the value, any case (fields: enums,
  references, names, e-mails, phones; at most 6), when the table has any;
- `update_<entity>_<field>(<key>, <field>)` for up to 2 enum fields and one e-mail or phone field: ToolError when
  the record is missing or already has that value;
- `create_<entity>(...)` and `delete_<entity>(<key>)` for tables that reference another table (orders of a customer,
  bookings of a guest): create takes the references (which must exist), the enum fields and up to two numbers (not
  negative), and keys the record `<PREFIX><n>`; delete refuses while another table's record references the record.
The declared tool is what the domain folder's `tools.json` holds and what the `tau` environment runs; the model's
code is accepted only when, run in the sandbox, it behaves as the declared tool on probe calls (`toolcheck`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestra.envs.tau.domains.derived import Constraint, Param, TableDef, ToolDef
from orchestra.synth.llm.schema import FieldSpec, TableSchema

MAX_SEARCH_FIELDS = 6
MAX_ENUM_UPDATES = 2
_PY = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
_SEARCHABLE = ("email", "phone", "name", "title")


@dataclass(frozen=True, slots=True)
class PlannedTool:
    """A tool to generate: its declaration, the Python signature to write, and what the code must do."""

    tool: ToolDef
    signature: str
    contract: str


def table_def(table: TableSchema) -> TableDef:
    return TableDef(key=table.key, entity=table.entity, id_prefix=id_prefix(table))


def id_prefix(table: TableSchema) -> str:
    return (re.sub(r"[^A-Z]", "", table.entity.upper())[:3] or "REC") + "-NEW-"


def plan_tools(tables: list[TableSchema]) -> list[PlannedTool]:
    """Every tool of the domain, in table order (see the module docstring)."""
    referenced_by = {t.name: tuple((o.name, f.name) for o in tables for f in o.references if f.references == t.name)
                     for t in tables}
    out: list[PlannedTool] = []
    for table in tables:
        key = _param(table.key, f"The {table.key} of the {table.entity}.", table.key)
        out.append(_planned(ToolDef(name=f"get_{table.entity}", kind="lookup", table=table.name, parameters=(key,),
                                    description=f"Get a {table.entity} by {table.key}."),
                            f"Return the record db[{table.name!r}][{table.key}]; raise ToolError if there is none."))
        searchable = [f for f in table.fields if f.name != table.key and (
            f.enum or f.references or any(w in f.name for w in _SEARCHABLE))][:MAX_SEARCH_FIELDS]
        if searchable:
            fields = tuple(f.name for f in searchable)
            out.append(_planned(ToolDef(
                name=f"search_{table.name}", kind="search", table=table.name, description=(
                    f"Find {table.entity} ids by a field's value (at most 10)."),
                parameters=(Param(name="field", description="Field to match.", enum=fields),
                            Param(name="value", description="Value it equals (any case)."))),
                f"Return the sorted keys of the {table.name} records whose `field` equals `value` as text, ignoring "
                f"case and surrounding spaces, as {{'{table.entity}_ids': keys[:10], 'more': max(0, len(keys) - 10)}}. "
                f"`field` is one of {list(fields)}."))
        for f in _updatable(table):
            out.append(_update(table, key, f))
        if table.references:
            out.append(_create(table))
            constraints = ((Constraint(type="not_referenced", referenced_by=referenced_by[table.name]),)
                           if referenced_by[table.name] else ())
            users = ", ".join(f"db[{o!r}] records' {f!r}" for o, f in referenced_by[table.name]) or "nothing"
            out.append(_planned(ToolDef(name=f"delete_{table.entity}", kind="delete", table=table.name,
                                        parameters=(key,), constraints=constraints,
                                        description=f"Delete a {table.entity}."),
                                f"Delete db[{table.name!r}][{table.key}] and return {{'deleted': {table.key}}}; raise "
                                f"ToolError if it does not exist, or if it is still referenced by {users}."))
    return out


def _updatable(table: TableSchema) -> list[FieldSpec]:
    enums = [f for f in table.fields if f.enum and not f.references and f.name != table.key][:MAX_ENUM_UPDATES]
    contact = [f for f in table.fields if f.type == "string" and not f.enum and not f.references
               and f.name != table.key and ("email" in f.name or "phone" in f.name)][:1]
    return enums + contact


def _update(table: TableSchema, key: Param, field: FieldSpec) -> PlannedTool:
    value = f"new_{field.name}" if field.name == key.name else field.name
    constraints = [Constraint(type="changes_value", field=field.name)]
    rules = "raise ToolError if the record does not exist or already has that value (compared as text, any case)"
    if "email" in field.name and not field.enum:
        constraints.append(Constraint(type="email", param=value))
        rules += ", or if the new value is not an e-mail address (one '@', a '.' after it, no spaces)"
    tool = ToolDef(name=f"update_{table.entity}_{field.name}", kind="update", table=table.name, field=field.name,
                   parameters=(key, _param(value, f"The new {field.name.replace('_', ' ')}.", field.name,
                                           field.enum)),
                   constraints=tuple(constraints), description=f"Set the {field.name.replace('_', ' ')} of a "
                   f"{table.entity}.")
    return _planned(tool, f"Set field {field.name!r} of db[{table.name!r}][{key.name}] to `{value}` and return the "
                          f"record; {rules}.")


def _create(table: TableSchema) -> PlannedTool:
    params: list[Param] = []
    constraints: list[Constraint] = []
    for f in table.references:
        params.append(_param(f.name, f"The {f.references} record it belongs to.", f.name))
        constraints.append(Constraint(type="exists", param=f.name, table=f.references))
    params += [_param(f.name, f"The {f.name.replace('_', ' ')}.", f.name, f.enum) for f in table.fields
               if f.enum and not f.references]
    numbers = [f for f in table.fields if f.type in ("integer", "number") and f.name != table.key][:2]
    for f in numbers:
        params.append(Param(name=f.name, type=f.type, required=False, field=f.name,
                            description=f"The {f.name.replace('_', ' ')} (not negative)."))
        constraints.append(Constraint(type="non_negative", param=f.name))
    prefix = id_prefix(table)
    tool = ToolDef(name=f"create_{table.entity}", kind="create", table=table.name, parameters=tuple(params),
                   constraints=tuple(constraints), description=f"Create a {table.entity}; returns it with its new "
                   f"{table.key}.")
    refs = ", ".join(f"{f.name} in db[{f.references!r}]" for f in table.references)
    nums = " and ".join(f.name for f in numbers)
    contract = (f"Raise ToolError unless {refs}" + (f", or if {nums} is negative" if numbers else "") +
                f". The new key is '{prefix}' + str(n), n = len(db[{table.name!r}]) + 1, increased while taken. Store "
                f"{{{table.key!r}: key}} plus every argument that is not None under its own name in "
                f"db[{table.name!r}][key] and return that record.")
    return _planned(tool, contract)


def _param(name: str, description: str, field: str, enum: tuple[str, ...] | None = None) -> Param:
    return Param(name=name, description=description, field=field, enum=enum)


def _planned(tool: ToolDef, contract: str) -> PlannedTool:
    args = ", ".join(f"{p.name}: {_PY[p.type]}" + ("" if p.required else " | None = None") for p in tool.parameters)
    return PlannedTool(tool, f"def {tool.name}(db: dict, {args}) -> dict", contract)
