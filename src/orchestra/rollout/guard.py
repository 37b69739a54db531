"""Tool output as untrusted data: wrapped with its provenance, every field escaped (RELIABILITY P4).

Tool results (web pages, database fields, other models' answers) may carry instructions; the orchestrator must read
them as data. `wrap_untrusted` encloses each observation in a marked block naming the tool and the call.

Invariant: nothing an observation carries can end its block or speak in another role. The header's fields (tool
name, call id, status: the model or a tool may choose any of them) are attribute-escaped (`& < > " '` and line
breaks become character references), so they cannot close the header, the block, or open a chat-template token.
The content is marker-escaped: text imitating the block's tags or a chat template's special tokens
(`<|im_end|>`, `<｜end▁of▁sentence｜>`, `<end_of_turn>`, ...) gets a backslash after its `<`, which tokenizers read as
ordinary text. So the only `<tool_output` and `</tool_output>` in a rendered block are its own first and last tags,
and it contains no special-token string at all. Per-task tool allow-lists are the other half of the guard, enforced
by `Toolbox.restricted` before execution.
"""

from __future__ import annotations

import html
import re

from orchestra.types import Observation

_MARKER = re.compile(r"<\s*(/?)\s*(tool_output|tool_call|tool_response|tools|system|start_of_turn|end_of_turn|s>)",
                     re.IGNORECASE)
_SPECIAL = re.compile(r"<([|｜])([^<>|｜\s]{1,64})([|｜])>")


def escape_markers(text: str) -> str:
    """Defuse tags that could end the data block or open a new role.

    `</tool_output>` becomes `<\\/tool_output>` and chat-template special tokens such as `<|im_start|>` become
    `<\\|im_start|>`, which tokenizers read as ordinary text.
    """
    text = _MARKER.sub(lambda m: "<\\" + m.group(1) + m.group(2), text)
    return _SPECIAL.sub(lambda m: "<\\" + m.group(1) + m.group(2) + m.group(3) + ">", text)


def escape_attribute(value: str) -> str:
    """A header field as inert text: no quote, angle bracket or line break survives."""
    return html.escape(value, quote=True).replace("\r", "&#13;").replace("\n", "&#10;")


def wrap_untrusted(observation: Observation) -> str:
    """The tool message text: a provenance-tagged block the orchestrator is told to treat as data."""
    status = "" if observation.status == "ok" else f' status="{escape_attribute(observation.status)}"'
    return (
        f'<tool_output tool="{escape_attribute(observation.name)}" call="{escape_attribute(observation.call_id)}"'
        f'{status} trust="untrusted">\n{escape_markers(observation.content)}\n</tool_output>'
    )


def plain(observation: Observation) -> str:
    """The observation's content as is (for environments whose tools return only trusted, recorded data)."""
    return observation.content
