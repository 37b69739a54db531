"""Typed Python function -> OpenAI/JSON-Schema `parameters`, and argument validation.

The schema is derived with pydantic from the signature's annotations (`Annotated[..., Field(description=...)]` or
plain types); per-argument descriptions may also come from a Google-style `Args:` section of the docstring, which is
read line by line (one `name: text` entry per argument), never guessed from prose. Validation of a call's arguments
uses the same pydantic model, so what the model is told and what is enforced cannot drift apart.

Tools known only by a schema (imported from MCP or an OpenAI `tools=` list) are validated by `validate_json_schema`,
which covers the subset of JSON Schema that function schemas use: type, properties, required, enum,
additionalProperties, items.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}


def docstring_summary_and_args(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The first paragraph of `fn`'s docstring and the `Args:` entries (`name: description`)."""
    doc = inspect.getdoc(fn) or ""
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    section = "summary"
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section, current = "args", None
            continue
        if stripped.endswith(":") and stripped[:-1] in ("Returns", "Raises", "Yields", "Examples", "Note"):
            section = "other"
            continue
        if section == "summary":
            if not stripped and summary_lines:
                section = "other"
            elif stripped:
                summary_lines.append(stripped)
        elif section == "args" and stripped:
            indent = len(line) - len(line.lstrip())
            head, sep, rest = stripped.partition(":")
            name = head.split("(")[0].strip()
            if sep and name.isidentifier() and (current is None or indent <= _args_indent(doc)):
                current = name
                args[name] = rest.strip()
            elif current is not None:
                args[current] = f"{args[current]} {stripped}".strip()
    return " ".join(summary_lines), args


def _args_indent(doc: str) -> int:
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            return len(line) - len(line.lstrip()) + 4
    return 4


def arguments_model(fn: Callable[..., Any], skip: frozenset[str] = frozenset()) -> type[pydantic.BaseModel]:
    """A pydantic model of `fn`'s parameters (less `skip`), with docstring descriptions; extra keys are refused."""
    _, arg_docs = docstring_summary_and_args(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name not in hints:
            raise TypeError(f"tool function {fn.__name__}: parameter {name!r} needs a type annotation")
        annotation = hints[name]
        default = ... if param.default is inspect.Parameter.empty else param.default
        field_info = pydantic.Field(default=default, description=arg_docs.get(name))
        fields[name] = (annotation, field_info)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    return pydantic.create_model(f"{fn.__name__}_arguments", __config__=config, **fields)


def parameters_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The JSON schema of an arguments model, in the self-contained shape OpenAI function schemas use."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def validate_json_schema(value: Any, schema: dict[str, Any], path: str = "arguments") -> list[str]:
    """Problems with `value` under `schema` (empty when valid), each naming the offending path."""
    problems: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        ok = any(
            isinstance(value, _JSON_TYPES.get(n, (object,)))
            and not (n in ("integer", "number") and isinstance(value, bool))
            for n in names
        )
        if not ok:
            return [f"{path}: expected {'/'.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{path}.{key}: required")
        for key, item in value.items():
            if key in props:
                problems += validate_json_schema(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}.{key}: unknown argument")
    if isinstance(value, list | tuple) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += validate_json_schema(item, schema["items"], f"{path}[{i}]")
    return problems
