"""Batched sampling from a transformers causal LM, with exact ids and per-token log-probabilities.

`generate_rows` runs one left-padded batch to completion with its own decode loop over the model's forward pass and
a `DynamicCache` (not `model.generate`), so that every row can have its own sampling settings and stop rule and the
reported numbers are exactly what was sampled:
- temperature 0 is greedy (argmax); otherwise softmax(logits / temperature), cut to the smallest top-p set, sampled
  (by inverting the CDF with one uniform draw) from a per-row `torch.Generator` seeded from `Sampling.seed` (or a
  seed the caller draws), so a seeded row's output does not depend on which other rows share its batch.
- `logprobs[i]` is log_softmax(logits) of the sampled token at temperature 1.0 with no top-p cut: the policy's own
  log-probability, which is what GRPO importance ratios need; it is NOT the probability under the (tempered,
  truncated) distribution the token was drawn from.
- A row stops after an end id (EOS, `<|im_end|>`; the end id is included in `completion_ids`), once its decoded
  text contains a stop string (the ids up to and including the token that completed it are kept; callers cut the
  text), or at its token budget (`max_tokens`, and never past the context window) with finish reason "length".
- Finished rows are dropped from the batch and the cache, so a long row does not make short ones cost more.
Positions come from the attention mask (left padding does not shift a row's positions), so a row's logits equal
those of the same prompt run alone, up to float rounding.

Rows without a stored prefix that begin with the same tokens (the system prompt every episode shares) have those
tokens prefilled once for the batch, not once per row.

With `prefixes`, a row whose leading tokens were already fed in an earlier turn starts from their stored keys and
values (`orchestra.backends.kv_reuse`) and only its remaining tokens are prefilled; the batch's cache then reads
[padding][stored prefix][padding][new tokens] per row, the padding masked out. With `keep_kv`, a row that ends on
an end id returns the keys and values of every token it fed, for the conversation's next turn.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from orchestra.backends.base import Sampling
from orchestra.backends.kv_reuse import PrefixKV, growing_cache, supports_reuse

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Generation:
    """One row's result: the sampled ids (end id included when the model ended), their log-probs, why it stopped."""

    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    kv: PrefixKV | None = field(default=None, compare=False, repr=False)
    """Keys and values of prompt + completion[:-1] (what was fed), when asked for and the row ended on an end id."""


@dataclass(slots=True)
class _Row:
    """A row's mutable decoding state (private to one `generate_rows` call)."""

    index: int
    sampling: Sampling
    budget: int
    generator: torch.Generator | None
    ids: list[int]
    logprobs: list[float]


def generate_rows(
    model: Any,
    prompts: Sequence[Sequence[int]],
    samplings: Sequence[Sampling],
    *,
    seeds: Sequence[int],
    end_ids: Collection[int],
    pad_id: int,
    max_context_tokens: int,
    decode: Callable[[Sequence[int]], str],
    prefixes: Sequence[PrefixKV | None] | None = None,
    keep_kv: bool = False,
) -> list[Generation]:
    """Sample one completion per prompt in a single batch. Every prompt must be shorter than the context window.

    `seeds[i]` seeds row i's generator when `samplings[i].seed` is None. `decode` turns ids into text (for stop
    strings). Shapes: the batch is (rows, longest prompt) left-padded with `pad_id`.
    """
    if len(prompts) != len(samplings) or len(prompts) != len(seeds):
        raise ValueError("prompts, samplings and seeds must have the same length")
    if not prompts:
        return []
    device = next(model.parameters()).device
    rows = [_new_row(i, p, s, seed, max_context_tokens, device) for i, (p, s, seed) in
            enumerate(zip(prompts, samplings, seeds, strict=True))]
    results: dict[int, Generation] = {}
    end = frozenset(end_ids)
    with torch.inference_mode():
        prefixes = list(prefixes) if prefixes is not None else [None] * len(prompts)
        _share_common_prefix(model, prompts, prefixes, device)
        _stage_long_rows(model, prompts, prefixes, pad_id, device)
        logits, cache, attention, positions = _prefill(model, prompts, pad_id, device, prefixes)
        keep_kv = keep_kv and supports_reuse(cache)
        active = rows
        while active:
            tokens, logprobs = _choose(logits, active)
            keep: list[int] = []
            for slot, (row, token, logprob) in enumerate(zip(active, tokens, logprobs, strict=True)):
                row.ids.append(token)
                row.logprobs.append(logprob)
                reason = _stop_reason(row, token, end, decode)
                if reason is None:
                    keep.append(slot)
                else:
                    kv = _row_kv(cache, attention, slot) if keep_kv and token in end else None
                    results[row.index] = Generation(tuple(row.ids), tuple(row.logprobs), reason, kv)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention, positions, tokens_t = attention[index], positions[index], torch.tensor(tokens)[keep]
                active = [active[k] for k in keep]
            else:
                tokens_t = torch.tensor(tokens)
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            positions = positions + 1
            out = model(input_ids=tokens_t.to(device)[:, None], attention_mask=attention,
                        position_ids=positions[:, None], past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1].float()
    return [results[i] for i in range(len(rows))]


def _new_row(index: int, prompt: Sequence[int], sampling: Sampling, seed: int, max_context_tokens: int,
             device: torch.device) -> _Row:
    budget = min(sampling.max_tokens, max_context_tokens - len(prompt))
    if budget < 1:
        raise ValueError(f"row {index}: a {len(prompt)}-token prompt leaves no room in a {max_context_tokens}-token "
                         "context (or max_tokens < 1)")
    generator = None
    if sampling.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(sampling.seed if sampling.seed is not None else seed)
    return _Row(index, sampling, budget, generator, [], [])


def _prefill(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device,
             prefixes: Sequence[PrefixKV | None] | None = None):
    """Run the prompts (each after its stored prefix, if any); (last logits, cache, attention mask, last positions).

    Layout per row: [pad][stored prefix] in the cache, then [pad][remaining prompt tokens] as input; the attention
    mask covers both and positions come from its running sum, so every token keeps its true position.
    """
    prefixes = list(prefixes) if prefixes is not None else [None] * len(prompts)
    cached = [p.length if p is not None else 0 for p in prefixes]
    suffixes = [list(prompt)[c:] for prompt, c in zip(prompts, cached, strict=True)]
    past = max(cached)
    width = max(len(x) for x in suffixes)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), past + width), dtype=torch.long)
    for r, (suffix, c) in enumerate(zip(suffixes, cached, strict=True)):
        input_ids[r, width - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
        attention[r, past - c:past] = 1
        attention[r, past + width - len(suffix):] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)[:, past:]
    cache = growing_cache(model)
    if past:
        _load_prefixes(cache, prefixes, past, device)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), cache, attention, position_ids[:, -1]


MIN_SHARED_PREFIX = 16


def _share_common_prefix(model: Any, prompts: Sequence[Sequence[int]], prefixes: list[PrefixKV | None],
                         device: torch.device) -> None:
    """Rows with no stored prefix that start with the same tokens (a shared system prompt) get those tokens' keys
    and values computed once, as a stored prefix (set in `prefixes`). At least `MIN_SHARED_PREFIX` tokens and two
    rows, and every row keeps at least one token to feed; models whose cache cannot be reused are left as they are."""
    fresh = [i for i, p in enumerate(prefixes) if p is None]
    if len(fresh) < 2:
        return
    length = min(len(prompts[i]) for i in fresh) - 1
    first = prompts[fresh[0]]
    for i in fresh[1:]:
        other = prompts[i]
        length = next((k for k in range(length) if other[k] != first[k]), length)
        if length < MIN_SHARED_PREFIX:
            return
    cache = growing_cache(model)
    model(input_ids=torch.tensor([list(first[:length])], device=device), past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    if not supports_reuse(cache):
        return
    shared = PrefixKV(length, tuple(layer.keys[0] for layer in cache.layers),
                      tuple(layer.values[0] for layer in cache.layers))
    for i in fresh:
        prefixes[i] = shared


def _stage_long_rows(model: Any, prompts: Sequence[Sequence[int]], prefixes: list[PrefixKV | None], pad_id: int,
                     device: torch.device) -> None:
    """Rows with far more tokens to feed than the batch's typical row (a cache miss among continuing conversations)
    are prefilled first, among themselves, up to their last token (their stored prefix is set in `prefixes`); the
    batch then feeds them one token. Without this, one long row would make every row of the batch pay its width in
    padding."""
    todo = [len(p) - (x.length if x is not None else 0) for p, x in zip(prompts, prefixes, strict=True)]
    typical = sorted(todo)[len(todo) // 2]
    long = [i for i, n in enumerate(todo) if n > 2 * typical + 32]
    if not long:
        return
    _, cache, attention, _ = _prefill(model, [prompts[i][:-1] for i in long], pad_id, device,
                                      [prefixes[i] for i in long])
    if not supports_reuse(cache):
        return
    for slot, i in enumerate(long):
        prefixes[i] = _row_kv(cache, attention, slot)


def _load_prefixes(cache: Any, prefixes: Sequence[PrefixKV | None], past: int, device: torch.device) -> None:
    """Fill an empty cache with each row's stored keys and values, right-aligned at `past` (zeros before)."""
    sample = next(p for p in prefixes if p is not None)
    for layer in range(len(sample.keys)):
        heads, _, dim = sample.keys[layer].shape
        keys = torch.zeros((len(prefixes), heads, past, dim), dtype=sample.keys[layer].dtype, device=device)
        values = torch.zeros_like(keys)
        for r, prefix in enumerate(prefixes):
            if prefix is not None:
                keys[r, :, past - prefix.length:] = prefix.keys[layer]
                values[r, :, past - prefix.length:] = prefix.values[layer]
        cache.update(keys, values, layer)


def _row_kv(cache: Any, attention: torch.Tensor, slot: int) -> PrefixKV:
    """The keys and values of the tokens row `slot` fed so far (its unmasked cache positions), copied out."""
    fed = attention[slot].bool()
    keys = tuple(layer.keys[slot][:, fed].clone() for layer in cache.layers)
    values = tuple(layer.values[slot][:, fed].clone() for layer in cache.layers)
    return PrefixKV(int(fed.sum()), keys, values)


def _choose(logits: torch.Tensor, rows: Sequence[_Row]) -> tuple[list[int], list[float]]:
    """Pick each row's next token; return (tokens, temperature-1 log-probs). logits: (rows, vocab) float32."""
    log_probs = torch.log_softmax(logits, dim=-1)
    tokens = logits.argmax(dim=-1).tolist()
    sampled = [slot for slot, row in enumerate(rows) if row.sampling.temperature > 0]
    if sampled:
        temperatures = torch.tensor([rows[k].sampling.temperature for k in sampled], device=logits.device)
        probs = torch.softmax(logits[sampled] / temperatures[:, None], dim=-1)
        for i, slot in enumerate(sampled):
            row_probs = probs[i] if rows[slot].sampling.top_p >= 1.0 else _top_p(probs[i], rows[slot].sampling.top_p)
            tokens[slot] = _draw(row_probs, rows[slot].generator)
    picked = log_probs.gather(1, torch.tensor(tokens, device=logits.device)[:, None]).squeeze(1).tolist()
    return [int(t) for t in tokens], [float(x) for x in picked]


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from `probs` (unnormalized is fine) by inverting the CDF with one uniform draw.

    Same distribution as `torch.multinomial(probs, 1)`, about 100x faster on a 49k vocabulary on CPU; the float64
    cumulative sum keeps the tail's rounding far below any probability that matters. Zero-probability tokens are
    never picked (the CDF does not rise at them).
    """
    cdf = probs.double().cumsum(0)
    u = torch.rand((), generator=generator, device=probs.device, dtype=torch.float64) * cdf[-1]
    return int(torch.searchsorted(cdf, u, right=True).clamp(max=probs.numel() - 1))


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest set whose mass reaches `top_p` (the most likely token always stays)."""
    sorted_probs, order = probs.sort(descending=True)
    outside = (sorted_probs.cumsum(0) - sorted_probs) >= top_p
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter(0, order, sorted_probs)


def _stop_reason(row: _Row, token: int, end_ids: frozenset[int], decode: Callable[[Sequence[int]], str]
                 ) -> FinishReason | None:
    if token in end_ids:
        return "stop"
    if row.sampling.stop:
        # A stop string that completes now ends in this token's text; earlier ones would have stopped the row.
        text = decode(row.ids)
        if any(stop in text for stop in row.sampling.stop):
            return "stop"
    if len(row.ids) >= row.budget:
        return "length"
    return None
