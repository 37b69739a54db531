"""ScriptedBackend: a deterministic ChatBackend double for tests, examples and benchmarks.

It answers from a script: either a list of replies consumed in order, or a function of the conversation. A reply is
text (parsed for tool calls like any model output when the request offers tools, so tests exercise the real parser;
with no tools it stays text, as with the real backends) or a ready `Completion`.
Usage is counted as whitespace-separated words, so costs are predictable in tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from orchestra.backends.base import Sampling
from orchestra.backends.pricing import ModelPrice
from orchestra.toolcalls import parse_tool_calls
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message, Usage

Reply = str | Completion
Script = Sequence[Reply] | Callable[[Sequence[Message]], Reply]


class ScriptedBackend:
    """Replies from `script`; `price` defaults to free. Records every conversation it was sent in `requests`."""

    def __init__(self, script: Script, *, model: str = "scripted", price: ModelPrice | None = None):
        self._script = script
        self._iter = iter(script) if not callable(script) else None
        self._model = model
        self.price = price or ModelPrice(0.0, 0.0)
        self.requests: list[list[Message]] = []
        self._ids = itertools.count()

    @property
    def model(self) -> str:
        return self._model

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        words = sum(len(m.content.split()) for m in messages)
        return self.price.cost_usd(Usage(words, sampling.max_tokens))

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling
    ) -> Completion:
        self.requests.append(list(messages))
        if self._iter is not None:
            try:
                reply = next(self._iter)
            except StopIteration:
                reply = "(script exhausted)"
        else:
            reply = self._script(messages)  # type: ignore[operator]
        if isinstance(reply, Completion):
            return reply
        usage = Usage(sum(len(m.content.split()) for m in messages), len(reply.split()))
        n = next(self._ids)
        text, calls = parse_tool_calls(reply, id_prefix=f"call_{n}_") if tools else (reply.strip(), [])
        return Completion(
            text=text,
            tool_calls=tuple(calls),
            usage=usage,
            cost_usd=self.price.cost_usd(usage),
            model=self._model,
        )
