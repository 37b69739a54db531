"""A required first tool call for local models, decoded under the tools' own grammar (`first_call="required"`).

Untrained small models answer from memory instead of calling tools (SmolLM2-135M says 17 * 23 + 4 = 347), and when
made to call one they write free-form JSON (an expression as the tool name, invented argument keys). This module
writes the first reply of an episode as a hermes tool call whose structure comes from the offered tools, while the
model makes every choice in it:
1. the opener `<tool_call>\\n{"name": "` is forced;
2. the tool name is the offered name the model finds most likely, read token by token from its own next-token
   distribution over the names still possible (one forward pass per token where the names diverge);
3. `", "arguments": {` and, for each *required* parameter of that tool's schema in order, its key are forced; the
   model writes each value (a string up to its closing quote, anything else up to `,` or `}`), except that a value
   the schema restricts to a list of strings (`enum`, e.g. the expert alias of `answer`) is chosen among them the way
   the tool name is;
4. `}}\\n</tool_call>` and the end-of-turn token close the reply.
Nothing in it knows about any particular tool or question. Optional parameters are left out.

Token exactness: the returned ids are exactly the ids the model read, in order (forced ids included, with
log-probability 0.0; sampled ids with their own). A sampled token that runs past a value's end is dropped and the
part of it inside the value is fed as forced text, so the decoded ids always equal the reply text. Forced ids count
toward `max_tokens`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestra.backends.base import Sampling
from orchestra.tools.spec import ToolSpec

TOOL_CALL_OPENER = '<tool_call>\n{"name": "'
"""The start of a hermes tool call, as `chat_format` tells the model to write it."""
_CLOSING = "}}\n</tool_call>"


@dataclass
class _Reply:
    """The ids of the reply being built and their log-probabilities."""

    backend: Any
    ids: list[int]
    logprobs: list[float]

    def force(self, text: str) -> None:
        forced = self.backend._encode(text)
        self.ids += forced
        self.logprobs += [0.0] * len(forced)


async def required_call(backend: Any, prompt_ids: Sequence[int], tools: Sequence[ToolSpec], sampling: Sampling
                        ) -> tuple[tuple[int, ...], tuple[float, ...], str]:
    """(completion ids, log-probs, finish reason) of a first reply that is one call of one of `tools`.

    `backend` is a `LocalBackend` (its tokenizer, model lock and micro-batcher are used).
    """
    reply = _Reply(backend, [], [])
    reply.force(TOOL_CALL_OPENER)
    spec = await _choose_tool(backend, [*prompt_ids, *reply.ids], tools)
    reply.force(spec.name + '", "arguments": {')
    schema = spec.parameters or {}
    properties = schema.get("properties") or {}
    for i, key in enumerate(k for k in schema.get("required") or [] if k in properties):
        choices = properties[key].get("enum")
        if choices and all(isinstance(c, str) for c in choices):
            reply.force((", " if i else "") + json.dumps(key) + ': "')
            value = await _most_likely(backend, [*prompt_ids, *reply.ids], choices)
            reply.force(json.dumps(value)[1:-1] + '"')
            continue
        is_string = properties[key].get("type") == "string"
        reply.force((", " if i else "") + json.dumps(key) + ": " + ('"' if is_string else ""))
        budget = sampling.max_tokens - len(reply.ids) - len(backend._encode(_CLOSING)) - 2
        if budget < 1:
            return tuple(reply.ids), tuple(reply.logprobs), "length"
        await _sample_value(backend, reply, prompt_ids, replace(sampling, max_tokens=budget,
                                                                 stop=('"',) if is_string else (",", "}")),
                            is_string)
        if is_string:
            reply.force('"')
    reply.force(_CLOSING)
    end = backend.tokenizer.eos_token_id
    end_id = end if end in backend.end_ids else min(backend.end_ids)
    reply.ids.append(end_id)
    reply.logprobs.append(0.0)
    return tuple(reply.ids), tuple(reply.logprobs), "stop"


async def _choose_tool(backend: Any, ids: list[int], tools: Sequence[ToolSpec]) -> ToolSpec:
    """The offered tool whose name the model rates most likely."""
    by_name = {t.name: t for t in tools}
    return by_name[await _most_likely(backend, ids, list(by_name))]


async def _most_likely(backend: Any, ids: list[int], options: Sequence[str]) -> str:
    """The option the model rates most likely after `ids`, decided token by token where the options diverge."""
    names = {o: tuple(backend._encode(o)) for o in options}
    chosen: list[int] = []
    while len(names) > 1:
        position = len(chosen)
        tokens_here = {tokens[position] for tokens in names.values() if len(tokens) > position}
        if not tokens_here:
            break
        if len(tokens_here) == 1:
            best = next(iter(tokens_here))
        else:
            scores = await asyncio.to_thread(_next_token_logits, backend, [*ids, *chosen])
            best = max(tokens_here, key=lambda token: scores[token])
        chosen.append(best)
        names = {n: t for n, t in names.items() if len(t) > position and t[position] == best}
    return next(iter(names)) if names else options[0]


def _next_token_logits(backend: Any, ids: list[int]) -> list[float]:
    import torch

    with backend._lock, torch.no_grad():
        logits = backend.lm(torch.tensor([ids], device=backend.lm.device)).logits[0, -1]
    return logits.float().tolist()


async def _sample_value(backend: Any, reply: _Reply, prompt_ids: Sequence[int], sampling: Sampling,
                        is_string: bool) -> None:
    """Let the model write one argument value; keep its whole tokens inside the value, force the rest of it.

    A value that is not valid JSON where it stands (a raw newline in a string, `abc` for a number) is replaced by
    its JSON string form, forced: the call stays parseable, and the toolbox's schema check tells the model what
    was wrong with the value. The replaced samples are not part of the reply (the model never reads them)."""
    generation = await backend._batcher.submit((*prompt_ids, *reply.ids), sampling)
    sampled = [t for t in generation.completion_ids if t not in backend.end_ids]
    text = backend._decode(sampled)
    cuts = [i for i in (text.find(s) for s in sampling.stop) if i >= 0]
    value = text[: min(cuts)] if cuts else text
    if not _valid(value, is_string):
        reply.force(json.dumps(value)[1:-1] if is_string else json.dumps(value.strip()))
        return
    keep = len(sampled)
    while keep and not value.startswith(backend._decode(sampled[:keep])):
        keep -= 1
    reply.ids += sampled[:keep]
    reply.logprobs += list(generation.logprobs[:keep])
    rest = value[len(backend._decode(sampled[:keep])):]
    if rest:
        reply.force(rest)


def _valid(value: str, is_string: bool) -> bool:
    try:
        json.loads(f'"{value}"' if is_string else value)
    except ValueError:
        return False
    return True
