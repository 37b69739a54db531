"""Tool-call dialects -> `ToolCall`s. The one place model output is parsed.

Dialects
- hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the text (Qwen3, vLLM's `hermes` parser);
- fenced JSON: a ```json (or bare ```) block holding `{"name": ..., "arguments": ...}` or a list of them;
- OpenAI `tool_calls`: the structured list an OpenAI-compatible API returns (`parse_openai_tool_calls`);
- compact (`dialect="compact"`, for small trained orchestrators): one call per line, `name(key=value, ...)`, a value
  bare when it is a plain word (`ask(model=mixtral)`) and JSON otherwise (`search(query="a, b", k=3)`). It is about a
  quarter of hermes' tokens, and every generated token costs a forward pass. Only parsed when asked for: a line like
  `f(x)` in a normal answer is text.

A call that cannot be read (truncated JSON, missing name, arguments that are not an object, an unclosed
`<tool_call>`) is returned with `ToolCall.error` set, never dropped and never raised: the toolbox turns it into an
error observation so the orchestrator can correct itself. `arguments` given as a JSON string (OpenAI style) are
decoded; `null` arguments mean `{}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from orchestra.types import ToolCall

_HERMES = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json|tool_call|tool)?[ \t]*\n(.*?)(```|$)", re.DOTALL)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


Dialect = Literal["hermes", "compact"]
DIALECTS: tuple[Dialect, ...] = ("hermes", "compact")


def parse_tool_calls(text: str, *, id_prefix: str = "call_", dialect: Dialect = "hermes") -> tuple[str, list[ToolCall]]:
    """Split model output into (text without the call blocks, calls). Hermes wins over fenced JSON; `compact`
    reads only compact call lines."""
    if dialect == "compact":
        return _parse_compact(text, id_prefix)
    visible = _THINK.sub("", text)
    calls: list[ToolCall] = []
    if "<tool_call>" in visible:
        for i, match in enumerate(_HERMES.finditer(visible)):
            body, closing = match.group(1), match.group(2)
            if not closing:
                calls.append(_broken(f"{id_prefix}{i}", "unclosed <tool_call> block (output truncated?)", body))
            else:
                calls.extend(_decode_block(body, f"{id_prefix}{i}"))
        remaining = _HERMES.sub("", text)
    else:
        remaining = text
        for i, match in enumerate(_FENCE.finditer(visible)):
            body = match.group(1)
            if not _looks_like_call(body):
                continue
            if not match.group(2):
                calls.append(_broken(f"{id_prefix}{i}", "unclosed ``` block (output truncated?)", body))
            else:
                calls.extend(_decode_block(body, f"{id_prefix}{i}"))
            remaining = remaining.replace(match.group(0), "")
    return remaining.strip(), calls


def parse_openai_tool_calls(raw: Sequence[Any] | None) -> list[ToolCall]:
    """OpenAI `message.tool_calls` (dicts or SDK objects) -> calls; broken entries carry `error`."""
    calls = []
    for i, entry in enumerate(raw or []):
        item = entry if isinstance(entry, dict) else _to_dict(entry)
        call_id = item.get("id") or f"call_{i}"
        fn = item.get("function") or {}
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            calls.append(ToolCall(call_id, "", {}, error="tool call without a function name"))
            continue
        calls.append(_with_arguments(call_id, name, fn.get("arguments")))
    return calls


def strip_think(text: str) -> str:
    """Text without `<think>...</think>` reasoning blocks."""
    return _THINK.sub("", text).strip()


_ECHOED_WRAPPER = re.compile(r"</?(?:tool_output|tool_response)\b[^>]*>")


def final_text(text: str) -> str:
    """A final message as the user reads it: without reasoning blocks, and without tool-output markup a model
    copied from its context (small models echo `<tool_output ...>395</tool_output>`; the tags are protocol, not
    answer)."""
    return _ECHOED_WRAPPER.sub("", strip_think(text)).strip()


def render_hermes(name: str, arguments: dict[str, Any]) -> str:
    """The canonical hermes text of one call (what SFT demonstrations contain)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


def render_call(name: str, arguments: dict[str, Any], dialect: Dialect = "hermes") -> str:
    """One call as `dialect` writes it."""
    if dialect == "hermes":
        return render_hermes(name, arguments)
    return f"{name}({', '.join(f'{k}={_compact_value(v)}' for k, v in arguments.items())})"


_BARE = re.compile(r"[A-Za-z_][\w.\-/:]*")
_COMPACT_START = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\(")
_KEY = re.compile(r"\s*([A-Za-z_]\w*)\s*=\s*")


def _compact_value(value: Any) -> str:
    if isinstance(value, str) and _BARE.fullmatch(value) and value not in ("true", "false", "null"):
        return value
    return json.dumps(value, ensure_ascii=False)


def _parse_compact(text: str, id_prefix: str) -> tuple[str, list[ToolCall]]:
    """Compact call lines -> calls; a line that opens a call (`name(`) and cannot be read is a call with `error`."""
    kept, calls = [], []
    for line in strip_think(text).splitlines():
        start = _COMPACT_START.match(line)
        if start is None:
            kept.append(line)
            continue
        call_id, name, body = f"{id_prefix}{len(calls)}", start.group(1), line[start.end():].rstrip()
        if not body.endswith(")"):
            calls.append(ToolCall(call_id, name, {}, error="unclosed call: expected `)` at the end of the line "
                                                         "(output truncated?)"))
            continue
        arguments, error = _compact_arguments(body[:-1])
        calls.append(ToolCall(call_id, name, arguments if error is None else {}, error=error))
    return "\n".join(kept).strip(), calls


def _compact_arguments(body: str) -> tuple[dict[str, Any], str | None]:
    """`key=value, ...` -> (arguments, None), or ({}, why it cannot be read)."""
    arguments: dict[str, Any] = {}
    position, decoder = 0, json.JSONDecoder()
    while body[position:].strip():
        key = _KEY.match(body, position)
        if key is None:
            return {}, f"arguments must be key=value pairs (e.g. model=NAME), got {body[position:].strip()!r}"
        position = key.end()
        if body[position:position + 1] in ('"', "[", "{") or re.match(r"-?\d", body[position:position + 2]):
            try:
                value, position = decoder.raw_decode(body, position)
            except json.JSONDecodeError as exc:
                return {}, f"argument {key.group(1)}: invalid JSON value ({exc.msg})"
        else:
            end = body.find(",", position)
            end = len(body) if end < 0 else end
            word = body[position:end].strip()
            value = {"true": True, "false": False, "null": None}.get(word, word)
            position = end
        if key.group(1) in arguments:
            return {}, f"argument {key.group(1)} given twice"
        arguments[key.group(1)] = value
        rest = body[position:].lstrip()
        if rest and not rest.startswith(","):
            return {}, f"expected `,` between arguments, got {rest!r}"
        position = len(body) - len(rest) + (1 if rest else 0)
    return arguments, None


def _decode_block(body: str, call_id: str) -> list[ToolCall]:
    try:
        value = json.loads(body.strip())
    except json.JSONDecodeError as exc:
        return [_broken(call_id, f"invalid JSON ({exc.msg} at position {exc.pos})", body)]
    items = value if isinstance(value, list) else [value]
    out = []
    for j, item in enumerate(items):
        cid = call_id if len(items) == 1 else f"{call_id}_{j}"
        if not isinstance(item, dict):
            out.append(_broken(cid, "a tool call must be a JSON object with `name` and `arguments`", body))
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            out.append(_broken(cid, "tool call without a `name`", body))
            continue
        out.append(_with_arguments(cid, name, item.get("arguments", item.get("parameters"))))
    return out


def _with_arguments(call_id: str, name: str, arguments: Any) -> ToolCall:
    if arguments is None:
        return ToolCall(call_id, name, {})
    if isinstance(arguments, str):
        if not arguments.strip():
            return ToolCall(call_id, name, {})
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            return ToolCall(call_id, name, {}, error=f"arguments are not valid JSON ({exc.msg})")
    if not isinstance(arguments, dict):
        return ToolCall(call_id, name, {}, error=f"arguments must be a JSON object, got {type(arguments).__name__}")
    return ToolCall(call_id, name, arguments)


def _broken(call_id: str, why: str, body: str) -> ToolCall:
    name_match = re.search(r'"name"\s*:\s*"([^"]+)"', body)
    return ToolCall(call_id, name_match.group(1) if name_match else "", {}, error=why)


def _looks_like_call(body: str) -> bool:
    return '"name"' in body


def _to_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return {"id": getattr(obj, "id", None), "function": _to_dict(obj.function) if hasattr(obj, "function") else {
        "name": getattr(obj, "name", None), "arguments": getattr(obj, "arguments", None)}}
