"""Tables, schema and typed data models of an LLM-designed domain, and the checks its records must pass.

Stages
- tables: the model names the domain's tables (`TableSpec`: name, entity, description);
- schema: per table, its fields (`TableSchema`: key field, `FieldSpec`s with type, enum, the table a field
  references); invalid answers are `Rejected` with the first violation;
- data models: `record_model(table)` builds a pydantic model per table from its schema (no model call): strict
  types, enum fields as `Literal`s, every field required, no extra fields. `schema.json` in the output holds their
  JSON schemas;
- records: `check_record` validates one record: schema conformity (the data model), then cross-field consistency
  (the key is a non-empty, unused string; references name existing records; amounts and counts are not negative;
  a start date is not after its end date). The realism check (a second model) is the pipeline's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pydantic

from orchestra.synth.llm.items import Rejected, extract_json

NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
FieldType = Literal["string", "integer", "number", "boolean"]
MAX_FIELDS = 12
NON_NEGATIVE_WORDS = ("price", "amount", "total", "quantity", "count", "balance", "age", "fee", "cost", "seats")
_PAIRS = (("start", "end"), ("from", "to"), ("check_in", "check_out"), ("departure", "arrival"))
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


class TableSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
    name: str = pydantic.Field(pattern=NAME.pattern)
    entity: str = pydantic.Field(pattern=NAME.pattern)
    description: str = ""


class FieldSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
    name: str = pydantic.Field(pattern=NAME.pattern)
    type: FieldType
    description: str = ""
    enum: tuple[str, ...] | None = None
    references: str | None = None


class TableSchema(pydantic.BaseModel):
    """One table as the pipeline uses it from the schema stage on."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    name: str
    entity: str
    description: str = ""
    key: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def references(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.references)


def parse_tables(text: str, count: int) -> list[dict[str, Any]]:
    """The tables stage's answer: at least one valid, distinct table; at most `count` kept."""
    raw = extract_json(text)
    items = raw.get("tables") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise Rejected("schema: no tables list")
    out: list[TableSpec] = []
    for item in items:
        spec = _validate(TableSpec, item, "table")
        if spec.name in {t.name for t in out} or spec.entity in {t.entity for t in out}:
            raise Rejected("schema: duplicate table", spec.name)
        out.append(spec)
    return [t.model_dump() for t in out[:count]]


def parse_schema(text: str, table: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    """The schema stage's answer for `table` (see the module docstring for what makes it valid)."""
    raw = extract_json(text)
    if not isinstance(raw, dict):
        raise Rejected("schema: not an object")
    fields = raw.get("fields")
    if not isinstance(fields, list) or not 2 <= len(fields) <= MAX_FIELDS:
        raise Rejected(f"schema: needs 2 to {MAX_FIELDS} fields")
    specs = [_validate(FieldSpec, f, "field") for f in fields]
    names = [f.name for f in specs]
    if len(set(names)) != len(names):
        raise Rejected("schema: duplicate field")
    key = raw.get("key")
    key_field = next((f for f in specs if f.name == key), None)
    if key_field is None or key_field.type != "string":
        raise Rejected("schema: key is not a string field", str(key))
    for f in specs:
        if f.references is not None and (f.references not in known or f.type != "string"):
            raise Rejected("schema: bad reference", f"{f.name} -> {f.references}")
        if f.enum is not None and (f.type != "string" or len(set(f.enum)) < 2 or f.name == key):
            raise Rejected("schema: bad enum", f.name)
    schema = TableSchema(name=table["name"], entity=table["entity"], description=table.get("description", ""),
                         key=str(key), fields=tuple(specs))
    return schema.model_dump()


_TYPES: dict[str, Any] = {"string": pydantic.StrictStr, "integer": pydantic.StrictInt,
                          "number": pydantic.StrictFloat | pydantic.StrictInt, "boolean": pydantic.StrictBool}


def record_model(table: TableSchema) -> type[pydantic.BaseModel]:
    """The typed data model of `table`'s records (see the module docstring)."""
    fields: dict[str, Any] = {}
    for f in table.fields:
        hint = Literal[f.enum] if f.enum else _TYPES[f.type]  # type: ignore[valid-type]
        fields[f.name] = (hint, pydantic.Field(description=f.description or f.name))
    name = "".join(part.title() for part in table.entity.split("_")) + "Record"
    return pydantic.create_model(name, __config__=pydantic.ConfigDict(extra="forbid", frozen=True), **fields)


def check_record(table: TableSchema, model: type[pydantic.BaseModel], record: Any, taken: set[str],
                 db: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`record` if it conforms and is consistent, else `Rejected` (see the module docstring)."""
    if not isinstance(record, dict):
        raise Rejected("record_schema: not an object")
    try:
        model.model_validate(record)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise Rejected(f"record_schema: {'.'.join(str(p) for p in first['loc'])}: {first['type']}",
                       first["msg"]) from None
    key = record[table.key]
    if not key.strip():
        raise Rejected("record_consistency: empty key")
    if key in taken:
        raise Rejected("record_consistency: duplicate key", key)
    for f in table.references:
        if record[f.name] not in db.get(f.references or "", {}):
            raise Rejected("record_consistency: dangling reference", f"{f.name}={record[f.name]!r}")
    for f in table.fields:
        value = record[f.name]
        if f.type in ("integer", "number") and any(w in f.name for w in NON_NEGATIVE_WORDS) and value < 0:
            raise Rejected("record_consistency: negative amount", f"{f.name}={value}")
    for first, second in _date_pairs(table):
        a, b = record[first], record[second]
        if _DATE.match(a) and _DATE.match(b) and a > b:
            raise Rejected("record_consistency: start after end", f"{first}={a} > {second}={b}")
    return record


def _date_pairs(table: TableSchema) -> list[tuple[str, str]]:
    names = {f.name for f in table.fields if f.type == "string"}
    pairs = []
    for a, b in _PAIRS:
        for name in names:
            if a in name.split("_") or name.startswith(a):
                other = name.replace(a, b, 1)
                if other != name and other in names:
                    pairs.append((name, other))
    return pairs


def _validate(model: type[pydantic.BaseModel], item: Any, what: str) -> Any:
    try:
        return model.model_validate(item)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise Rejected(f"schema: bad {what}", f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
