"""Running one pipeline item: ask the model, check what it wrote, store the outcome; never raise for bad output.

`ItemRunner.run(stage, item, inputs, messages, check)` is the one path every LLM stage takes:
1. the cache key is `cache.digest(stage, prompt, model identity, [item id, inputs, run seed])` (two items may ask the
   same question: each keeps its own answer); a stored outcome is returned as is;
2. otherwise (at most `concurrency` at once) the model is asked once, with a seed derived from the key, so a rerun
   of an unfinished item asks the same question;
3. `check(text)` turns the text into the accepted value or raises `Rejected(reason)`: bad JSON, a schema violation,
   code that fails its static checks or the sandbox, a task whose golden actions fail;
4. the outcome (accepted or rejected) is written at once; a `BackendError` (the endpoint failed after the backend's
   own retries) gives a `failed` outcome that is not stored, so a rerun asks again.
Every outcome is also kept in `outcomes` for the run's rejection report.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.errors import BackendError
from orchestra.synth.llm.cache import Outcome, StageCache, digest
from orchestra.types import Message

Check = Callable[[str], Awaitable[Any]]
_FENCE = re.compile(r"```[a-z]*\n")


class Rejected(Exception):
    """What the model wrote is not usable; `reason` is short and countable ('bad_json', 'schema: no key field')."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Model:
    """A backend with the sampling every call uses; `identity` is what cache keys hold (the name and the sampling,
    never the endpoint's address, so a server moved to another port still finds its items)."""

    backend: ChatBackend
    sampling: Sampling = Sampling(temperature=0.7, max_tokens=768)

    @property
    def identity(self) -> str:
        s = self.sampling
        return f"{self.backend.model}|t={s.temperature}|p={s.top_p}|max={s.max_tokens}"


class ItemRunner:
    """Runs items against the cache (see the module docstring). One per pipeline run."""

    def __init__(self, cache: StageCache, *, concurrency: int = 4, seed: int = 0):
        self.cache = cache
        self.seed = seed
        self.gate = asyncio.Semaphore(concurrency)
        self.outcomes: list[Outcome] = []
        self.calls = 0
        self.cost_usd = 0.0

    async def run(self, stage: str, item: str, inputs: Any, messages: Sequence[Message], model: Model,
                  check: Check) -> Outcome:
        key = digest(stage, "\n".join(m.content for m in messages), model.identity, [item, inputs, self.seed])
        outcome = self.cache.get(stage, key)
        if outcome is None:
            outcome = await self._fresh(stage, item, key, messages, model, check)
            self.cache.put(key, outcome)
        self.outcomes.append(outcome)
        return outcome

    async def local(self, stage: str, item: str, inputs: Any, identity: str, work: Callable[[], Awaitable[Any]]
                    ) -> Outcome:
        """An item with no model call (a sandbox check, a replay): cached and reported the same way."""
        key = digest(stage, "", identity, [item, inputs, self.seed])
        outcome = self.cache.get(stage, key)
        if outcome is None:
            async with self.gate:
                try:
                    outcome = Outcome(stage=stage, item=item, status="accepted", value=await work())
                except Rejected as exc:
                    outcome = Outcome(stage=stage, item=item, status="rejected", reason=exc.reason,
                                      detail=exc.detail[:2000])
            self.cache.put(key, outcome)
        self.outcomes.append(outcome)
        return outcome

    async def _fresh(self, stage: str, item: str, key: str, messages: Sequence[Message], model: Model,
                     check: Check) -> Outcome:
        sampling = replace(model.sampling, seed=int(key[:8], 16))
        async with self.gate:
            try:
                completion = await model.backend.complete(messages, (), sampling)
            except BackendError as exc:
                return Outcome(stage=stage, item=item, status="failed", reason="backend_error", detail=str(exc)[:500])
            self.calls += 1
            self.cost_usd += completion.cost_usd
            if completion.tool_calls:  # none were offered: the backend read a fenced JSON block as a call
                return Outcome(stage=stage, item=item, status="rejected", reason="answer_taken_as_tool_call",
                               detail=f"a fenced JSON block was parsed as a call to {completion.tool_calls[0].name!r};"
                               f" what was left: {completion.text[:500]}")
            try:
                value = await check(completion.text)
            except Rejected as exc:
                cut = completion.finish_reason == "length"  # the answer hit max_tokens: say so, not just "bad"
                answer = completion.text[:1500]
                same = not exc.detail or answer.startswith(exc.detail)  # a parser's detail may be the answer itself
                detail = answer if same else f"{exc.detail[:400]} | the answer: {answer}"
                return Outcome(stage=stage, item=item, status="rejected",
                               reason=f"truncated: {exc.reason}" if cut else exc.reason, detail=detail)
        return Outcome(stage=stage, item=item, status="accepted", value=value)


def extract_json(text: str) -> Any:
    """The JSON object or array that opens `text`'s answer: at its first `{`, its first `[`, or right after a code fence
    (prose around it allowed), else `Rejected`. Later brackets are not tried: in a truncated answer they open inner
    objects, which would pass for the answer."""
    decoder = json.JSONDecoder()
    starts = [i for i in (text.find("{"), text.find("["), *(_first_bracket(text, m.end())
                                                            for m in _FENCE.finditer(text))) if i is not None and i >= 0]
    starts.sort()
    for start in dict.fromkeys(starts):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict | list):
            return value
    raise Rejected("bad_json", text[:500])


def _first_bracket(text: str, start: int) -> int | None:
    found = [i for i in (text.find("{", start), text.find("[", start)) if i >= 0]
    return min(found) if found else None


def extract_code(text: str) -> str:
    """The Python source in `text`: the first fenced block (```python), else the JSON field "code", else the text."""
    fence = text.find("```")
    if fence >= 0:
        body = text[fence + 3:]
        body = body.split("\n", 1)[1] if "\n" in body else ""
        end = body.find("```")
        return body[:end] if end >= 0 else body
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text.strip())
        except json.JSONDecodeError:
            return text
        if isinstance(value, dict) and isinstance(value.get("code"), str):
            return value["code"]
    return text
