"""Tool-call dialects -> `ToolCall`s. The one place model output is parsed.

Dialects
- hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the text (Qwen3, vLLM's `hermes` parser);
- fenced JSON: a ```json (or bare ```) block holding `{"name": ..., "arguments": ...}` or a list of them;
- OpenAI `tool_calls`: the structured list an OpenAI-compatible API returns (`parse_openai_tool_calls`).

A call that cannot be read (truncated JSON, missing name, arguments that are not an object, an unclosed
`<tool_call>`) is returned with `ToolCall.error` set, never dropped and never raised: the toolbox turns it into an
error observation so the orchestrator can correct itself. `arguments` given as a JSON string (OpenAI style) are
decoded; `null` arguments mean `{}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from orchestra.types import ToolCall

_HERMES = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json|tool_call|tool)?[ \t]*\n(.*?)(```|$)", re.DOTALL)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def parse_tool_calls(text: str, *, id_prefix: str = "call_") -> tuple[str, list[ToolCall]]:
    """Split model output into (text without the call blocks, calls). Hermes wins over fenced JSON."""
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
