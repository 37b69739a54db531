"""The wire records of the orchestrator API: the chat request with its `orchestra` extension, and the error shape.

The request accepts what the official `openai` client sends (unknown top-level fields are ignored, as OpenAI's own
API ignores fields it does not use); the `orchestra` extension (the client's `extra_body={"orchestra": {...}}`) is
strict, so a misspelt option is a 400 naming the field rather than a silently ignored wish.

Every error leaves the server as `{"error": {"message", "type", "code"}}` (`error_body`), the shape the `openai`
client parses into its exception classes. Messages never echo request headers, so an API key cannot leak through one.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

import pydantic

from orchestra.types import Message, ToolCall

M = TypeVar("M", bound=pydantic.BaseModel)


class RequestError(Exception):
    """Bad input from the client: becomes an OpenAI-shaped error with `status`."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class PreferencesIn(Strict):
    """The user's preference for this request (the paper's P and its instruction); replaces the pool's."""

    instruction: str = ""
    outcome: float = pydantic.Field(1.0, ge=0, le=1)
    cost: float = pydantic.Field(0.0, ge=0, le=1)
    latency: float = pydantic.Field(0.0, ge=0, le=1)
    tool_weights: dict[str, float] = pydantic.Field(default_factory=dict)


class OrchestraOptions(Strict):
    """The `orchestra` extension field of a chat request."""

    preferences: PreferencesIn | None = None
    budget_usd: float | None = pydantic.Field(None, ge=0, description="Dollar cap of this episode (≤ the pool's).")
    max_turns: int | None = pydantic.Field(None, ge=1, description="Turn cap of this episode (≤ the pool's).")
    banned_tools: list[str] = pydantic.Field(default_factory=list, description="Tools refused in this episode.")
    stream_steps: bool = pydantic.Field(False, description="Stream each orchestrator step and tool result.")


class FunctionCallIn(pydantic.BaseModel):
    name: str
    arguments: str = "{}"


class ToolCallIn(pydantic.BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(pydantic.BaseModel):
    """One OpenAI chat message; `content` may be a string, a list of parts (text parts are kept) or null."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


class ChatRequest(pydantic.BaseModel):
    """`POST /v1/chat/completions`. Sampling fields other than `temperature` are accepted and not used: the
    orchestrator's per-turn token limit is the pool's."""

    model_config = pydantic.ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessageIn] = pydantic.Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = pydantic.Field(None, ge=0)
    n: int = pydantic.Field(1, ge=1, le=1, description="One choice per request (an episode is not resampled).")
    orchestra: OrchestraOptions = pydantic.Field(default_factory=OrchestraOptions)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


def to_messages(messages: list[ChatMessageIn]) -> list[Message]:
    """The request's messages as orchestra records (`developer` is read as `system`)."""
    out = []
    for m in messages:
        calls = tuple(ToolCall(c.id, c.function.name, _arguments(c.function.arguments)) for c in m.tool_calls or ())
        role = "system" if m.role == "developer" else m.role
        out.append(Message(role, m.text(), tool_calls=calls, tool_call_id=m.tool_call_id, name=m.name))
    return out


def parse_body(raw: bytes, model: type[M]) -> M:
    """The request body as `model`, or `RequestError` (400) naming what is wrong with it."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"The body is not valid JSON ({type(exc).__name__} at position "
                                f"{getattr(exc, 'pos', getattr(exc, 'start', '?'))}).", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError(400, "The body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        message, param = describe_validation(exc)
        raise RequestError(400, message, code="invalid_value", param=param) from None


def error_body(message: str, kind: str, code: str | int | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def describe_validation(exc: pydantic.ValidationError) -> tuple[str, str | None]:
    """One line naming each bad field (`orchestra.budget_usd: ...`), and the first field's path as `param`."""
    errors = exc.errors(include_input=False, include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors]
    first = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
    return "; ".join(parts), first


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}
