"""A request that offers no tools gets its reply as text: no backend reads tool calls out of it.

A synthesis or user-simulator model asked for a plain JSON answer may well write a fenced block with a "name" key;
that is the answer, not a call. Each backend that parses calls from text is checked both ways: without tools the
text is returned whole, with tools the same text is read as a call (so the test can tell the two apart).
"""

from __future__ import annotations

import json

import pytest

from orchestra.backends.base import Sampling
from orchestra.backends.local import LocalBackend
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.openai_completion import to_completion
from orchestra.backends.openai_wire import Reply as WireReply
from orchestra.backends.pricing import ModelPrice
from orchestra.backends.scripted import ScriptedBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.tools import tool
from orchestra.types import Message, Usage
from tests.forced_model import ForcedLM
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, always

ANSWER_JSON = {"name": "Ada Lovelace", "arguments": {"born": 1815}}
FENCED = "Here is the record:\n```json\n" + json.dumps(ANSWER_JSON) + "\n```"
HERMES = '<tool_call>{"name": "Ada", "arguments": {}}</tool_call>'
ASK = [Message("user", "Give the record as JSON.")]


def lovelace(born: int) -> int:
    """A tool whose name the reply does not use: offering it is what makes the text be read for calls."""
    return born


TOOL = tool(lovelace)


def _read_back(text: str) -> dict:
    body = text.split("```json\n", 1)[1].split("\n```", 1)[0]
    return json.loads(body)


@pytest.mark.parametrize("content", [FENCED, HERMES])
async def test_openai_compat_keeps_text_when_no_tools_were_sent(content):
    with ScriptedOpenAIServer(always(Reply(content=content))) as server:
        backend = OpenAICompatBackend("m", server.base_url, price=ModelPrice(0.0, 0.0))
        plain = await backend.complete(ASK, [], Sampling())
        offered = await backend.complete(ASK, [TOOL.spec], Sampling())
        await backend.aclose()
        assert "tools" not in server.requests[0].body and "tools" in server.requests[1].body
    assert plain.tool_calls == () and plain.text == content
    assert len(offered.tool_calls) == 1 and offered.tool_calls[0].name in ("Ada Lovelace", "Ada")
    if content == FENCED:
        assert _read_back(plain.text) == ANSWER_JSON


async def test_scripted_backend_keeps_text_when_no_tools_were_offered():
    backend = ScriptedBackend([FENCED, FENCED])
    plain = await backend.complete(ASK, [], Sampling())
    offered = await backend.complete(ASK, [TOOL.spec], Sampling())
    assert plain.tool_calls == () and _read_back(plain.text) == ANSWER_JSON
    assert [c.name for c in offered.tool_calls] == ["Ada Lovelace"] and "```" not in offered.text


async def test_local_backend_keeps_text_when_no_tools_were_offered():
    tok = tiny_tokenizer()
    ids = [one for ch in FENCED for one in tok.encode(ch, add_special_tokens=False)]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    backend = LocalBackend(ForcedLM(tiny_model(tok), [ids], end), tok, name="tiny")
    sampling = Sampling(temperature=0.0, max_tokens=len(ids) + 4)
    plain = await backend.complete(ASK, [], sampling)
    offered = await backend.complete(ASK, [TOOL.spec], sampling)
    assert plain.completion_ids[:len(ids)] == tuple(ids)  # the forced model really wrote the block
    assert plain.tool_calls == () and _read_back(plain.text) == ANSWER_JSON
    assert [c.name for c in offered.tool_calls] == ["Ada Lovelace"]


def test_to_completion_reads_calls_from_text_only_when_tools_were_offered():
    """The pure reply -> Completion step split out of openai_compat, called directly (no server)."""
    key = "sk-" + "q" * 40
    reply = WireReply(text=FENCED + f" {key}", raw_tool_calls=[{"id": None, "function": {"name": "lovelace",
                      "arguments": '{"born": 1815}'}}], usage=None, finish_reason="stop", model="m")
    common = dict(key=key, model="m", price=ModelPrice(1.0, 2.0), messages=ASK, sampling=Sampling(max_tokens=8),
                  max_response_chars=10_000, latency_s=0.1)
    structured = to_completion(reply, tools=[], **common)  # a structured call is the server's, tools or not
    assert [c.name for c in structured.tool_calls] == ["lovelace"] and structured.tool_calls[0].id.startswith("call_")
    assert key not in structured.text and structured.usage.output_tokens == 8  # scrubbed; estimated, capped
    text_only = WireReply(text=FENCED, raw_tool_calls=[], usage=Usage(3, 4), finish_reason="stop", model="m")
    plain = to_completion(text_only, tools=[], **common)
    offered = to_completion(text_only, tools=[TOOL.spec], **common)
    assert plain.tool_calls == () and plain.text == FENCED and plain.cost_usd == (3 * 1.0 + 4 * 2.0) / 1e6
    assert [c.name for c in offered.tool_calls] == ["Ada Lovelace"]
