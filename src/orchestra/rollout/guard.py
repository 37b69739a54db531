"""Tool output as untrusted data: wrapped with its provenance, fake closing markers escaped.

Tool results (web pages, database fields, other models' answers) may carry instructions; the orchestrator must read
them as data. `wrap_untrusted` encloses each observation in a marked block naming the tool and the call, and escapes
any text inside that imitates the block's markers, so an observation cannot close its own block and speak as the
system. Per-task tool allow-lists are the other half of the guard, enforced by `Toolbox.restricted` before execution.
"""

from __future__ import annotations

import re

from orchestra.types import Observation

_MARKER = re.compile(r"<(/?)\s*(tool_output|tool_call|tool_response|system)", re.IGNORECASE)
_SPECIAL = re.compile(r"<\|([A-Za-z_]+)\|>")


def escape_markers(text: str) -> str:
    """Defuse tags that could end the data block or open a new role.

    `</tool_output>` becomes `<\\/tool_output>` and chat-template special tokens such as `<|im_start|>` become
    `<\\|im_start|>`, which tokenizers read as ordinary text.
    """
    text = _MARKER.sub(lambda m: "<\\" + m.group(1) + m.group(2), text)
    return _SPECIAL.sub(lambda m: "<\\|" + m.group(1) + "|>", text)


def wrap_untrusted(observation: Observation) -> str:
    """The tool message text: a provenance-tagged block the orchestrator is told to treat as data."""
    status = "" if observation.status == "ok" else f' status="{observation.status}"'
    return (
        f'<tool_output tool="{observation.name}" call="{observation.call_id}"{status} trust="untrusted">\n'
        f"{escape_markers(observation.content)}\n</tool_output>"
    )


def plain(observation: Observation) -> str:
    """The observation's content as is (for environments whose tools return only trusted, recorded data)."""
    return observation.content
