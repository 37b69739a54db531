"""Typed Python function -> OpenAI/JSON-Schema `parameters`, and argument validation.

The schema is derived with pydantic from the signature's annotations (`Annotated[..., Field(description=...)]` or
plain types); per-argument descriptions may also come from a Google-style `Args:` section of the docstring, which is
read line by line (one `name: text` entry per argument), never guessed from prose. Validation of a call's arguments
uses the same pydantic model, so what the model is told and what is enforced cannot drift apart.

Every call's arguments are also checked against the tool's JSON-Schema `parameters` by a real validator (`jsonschema`,
Draft 2020-12, compiled once per `ToolSpec`), before the call: tools known only by a schema (MCP, an OpenAI `tools=`
list) get the whole language enforced (`anyOf`, `maximum`, `pattern`, `$ref`, ...), and a typed tool is held to
exactly the schema its model is shown. A problem reads `arguments.k: 25 is greater than the maximum of 20`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pydantic

if typing.TYPE_CHECKING:
    from jsonschema.protocols import Validator

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


class SchemaInvalid(Exception):
    """A tool's `parameters` is not a valid JSON Schema: the tool's fault, never the calling model's."""


def compile_validator(schema: dict[str, Any]) -> Validator:
    """A compiled Draft 2020-12 validator for `schema`; raises `SchemaInvalid` when the schema is malformed."""
    import jsonschema  # imported on first use: `import orchestra` stays light

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = _render_path("parameters", exc.absolute_path)
        raise SchemaInvalid(f"{path}: {_short(exc.message)}") from None
    return jsonschema.Draft202012Validator(schema)


def schema_problems(validator: Validator, value: Any, path: str = "arguments") -> list[str]:
    """Problems with `value` under a compiled validator (empty when valid), each `path: rule violated`.

    The fast path is one `is_valid` walk; the errors are only collected (in path order) when it fails.
    """
    if validator.is_valid(value):
        return []
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_render_path(path, err.absolute_path)}: {_short(err.message)}" for err in errors[:_MAX_PROBLEMS]]


def validate_json_schema(value: Any, schema: dict[str, Any], path: str = "arguments") -> list[str]:
    """Problems with `value` under `schema` (empty when valid); compiles the schema each call, so hot paths use
    `ToolSpec.argument_problems`, which caches the compiled validator."""
    return schema_problems(compile_validator(schema), value, path)


_MAX_PROBLEMS = 5
_MAX_PROBLEM_CHARS = 300


def _render_path(root: str, parts: Any) -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(message: str) -> str:
    # A violating 1 MB string would otherwise be echoed whole into the model's context.
    if len(message) <= _MAX_PROBLEM_CHARS:
        return message
    return message[: _MAX_PROBLEM_CHARS - 15] + " ...[truncated]"
