"""Rendering conversations for a local model: the tokenizer's chat template plus hermes tool calling.

What the model reads
- Tools: passed as `tools=` when the chat template renders them natively (Qwen3); otherwise (SmolLM2, plain ChatML)
  rendered into the system message in hermes style: a `<tools>` block holding the JSON list of OpenAI function
  schemas, and the instruction to answer with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. With no
  system message, one is added to carry them.
- Assistant messages with tool calls: their text followed by one hermes `<tool_call>` block per call (what the parser
  in `orchestra.toolcalls` reads back). Calls that could not be parsed (`ToolCall.error`) have no arguments to
  render and are left out; this matters only when a conversation is re-rendered from text, which the backend avoids
  for its own replies (see `continuation`).
- Tool messages: the template's tool role when it has one (its source compares a role with "tool"); otherwise a
  user message whose content wraps each result in `<tool_response>...</tool_response>`, consecutive results merged
  into one message (the Qwen convention).

`continuation` gives the text that follows an assistant reply already in context: the template's end-of-turn text
and the new messages up to the next generation prompt. The backend tokenizes only that and appends it to the exact
ids the model read and sampled, so sampled text is never re-tokenized. It requires an append-only template (the
rendering of a conversation starts with the rendering of any earlier prefix ending in an assistant turn); ChatML,
SmolLM2 and Qwen3 templates are; a template that is not is reported as a `ConfigError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from orchestra.errors import ConfigError
from orchestra.toolcalls import DIALECTS, Dialect, render_call
from orchestra.tools.spec import ToolSpec
from orchestra.types import Message

HERMES_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
HERMES_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

_SENTINEL = "ORCHESTRA7f3aSENTINEL"
_TOOL_ROLE = re.compile(r"""["']tool["']""")
_PROBE_TOOL = ToolSpec("orchestra_probe_tool_3c1d", "probe", {"type": "object", "properties": {}})


def hermes_tools_section(tools: Sequence[ToolSpec]) -> str:
    """The hermes tools block for a system message: a JSON list of OpenAI function schemas, one per line."""
    body = ",\n".join(json.dumps(t.to_openai(), ensure_ascii=False) for t in tools)
    return f"{HERMES_TOOLS_INTRO}[\n{body}\n]{HERMES_TOOLS_OUTRO}"


def tool_response(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


class ChatFormat:
    """Renders `Message`s with a tokenizer's chat template. Capabilities are detected once, or given explicitly."""

    def __init__(self, tokenizer: Any, *, native_tools: bool | None = None, native_tool_role: bool | None = None,
                 render_tools: bool = True, calls: Dialect = "hermes"):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("the tokenizer has no chat template: set `tokenizer.chat_template` before use")
        if calls not in DIALECTS:
            raise ConfigError(f"calls: {calls!r} is not one of {', '.join(DIALECTS)}")
        self.tokenizer = tokenizer
        self.render_tools = render_tools
        self.calls = calls
        """The dialect assistant tool calls are written in (what the model reads back and is trained to write)."""
        self.native_tools = self._detect_native_tools() if native_tools is None else native_tools
        self.native_tool_role = (
            bool(_TOOL_ROLE.search(self._template_source())) if native_tool_role is None else native_tool_role
        )

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec], *, add_generation_prompt: bool) -> str:
        """The prompt text of `messages` with `tools`, optionally ending with the assistant generation prompt."""
        if not self.render_tools:
            tools = ()
        return self._apply(self.template_messages(messages, tools), tools, add_generation_prompt)

    def continuation(
        self, history: Sequence[Message], new: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> tuple[str, str]:
        """(closing, delta) after the assistant reply that ends `history`.

        `closing` is the text the template writes right after an assistant message's content (e.g.
        `<|im_end|>\\n`); `delta` renders `new` and the generation prompt. The assistant reply's own text is replaced
        by a sentinel, so nothing the model wrote is rendered here.
        """
        if not history or history[-1].role != "assistant":
            raise ValueError("continuation needs a history ending with an assistant message")
        probe = [*history[:-1], Message("assistant", _SENTINEL)]
        before = self.render(probe, tools, add_generation_prompt=False)
        full = self.render([*probe, *new], tools, add_generation_prompt=True)
        if _SENTINEL not in before or not full.startswith(before):
            raise ConfigError("the chat template is not append-only (a conversation's rendering does not start "
                              "with the rendering of its prefix), so sampled tokens cannot be kept exactly")
        return before[before.rindex(_SENTINEL) + len(_SENTINEL):], full[len(before):]

    def template_messages(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
        """The dicts handed to the chat template (tools folded into the system message when not native)."""
        out: list[dict[str, Any]] = []
        for m in messages:
            if m.role == "assistant":
                out.append({"role": "assistant", "content": assistant_text(m, self.calls)})
            elif m.role == "tool" and self.native_tool_role:
                entry: dict[str, Any] = {"role": "tool", "content": m.content}
                if m.tool_call_id is not None:
                    entry["tool_call_id"] = m.tool_call_id
                if m.name is not None:
                    entry["name"] = m.name
                out.append(entry)
            elif m.role == "tool":
                if out and out[-1].get("_tool_responses"):
                    out[-1]["content"] += "\n" + tool_response(m.content)
                else:
                    out.append({"role": "user", "content": tool_response(m.content), "_tool_responses": True})
            else:
                out.append({"role": m.role, "content": m.content})
        for entry in out:
            entry.pop("_tool_responses", None)
        if tools and not self.native_tools:
            section = hermes_tools_section(tools)
            if out and out[0]["role"] == "system":
                out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{section}" if out[0]["content"] else section}
            else:
                out.insert(0, {"role": "system", "content": section})
        return out

    def _apply(self, conversation: list[dict[str, Any]], tools: Sequence[ToolSpec], add_generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
        if tools and self.native_tools:
            kwargs["tools"] = [t.to_openai() for t in tools]
        text = self.tokenizer.apply_chat_template(conversation, **kwargs)
        if not isinstance(text, str):
            raise ConfigError("the tokenizer's apply_chat_template(tokenize=False) did not return text")
        return text

    def _template_source(self) -> str:
        template = self.tokenizer.chat_template
        if isinstance(template, dict):  # several named templates: the default one renders chats
            template = template.get("default") or next(iter(template.values()))
        return str(template)

    def _detect_native_tools(self) -> bool:
        """True when the template writes `tools=` into the prompt (probed with a tool of a unique name)."""
        from jinja2 import TemplateError

        probe = [{"role": "user", "content": "x"}]
        try:
            text = self.tokenizer.apply_chat_template(
                probe, tools=[_PROBE_TOOL.to_openai()], tokenize=False, add_generation_prompt=True
            )
        except (TemplateError, ValueError, TypeError, KeyError):  # a template that chokes on tools has no support
            return False
        return isinstance(text, str) and _PROBE_TOOL.name in text


def assistant_text(message: Message, calls: Dialect = "hermes") -> str:
    """An assistant message as the model wrote it: its text, then each readable call in the `calls` dialect."""
    blocks = [render_call(c.name, c.arguments, calls) for c in message.tool_calls if c.error is None]
    if not blocks:
        return message.content
    return "\n".join([message.content, *blocks]) if message.content else "\n".join(blocks)
