"""Training data for the RouterBench orchestrator: tasks, their sampled preferences, demonstrations, encodings.

Preferences (per example, seeded by (seed, task id) so a resumed run draws the same ones):
- default: p_outcome = 1, p_cost = `cost_weight`, no instruction;
- avoid: one provider's models are to be avoided: the instruction names them ("Avoid claude models.") and P weighs
  every other model 1 and the avoided ones 0 (the paper's form: the reward cannot go below zero for a call, so
  avoidance is taught by rewarding the alternatives). The demonstration policy is refit without the avoided models.

Encoding (`encode_conversation`) reproduces exactly what `LocalBackend` feeds the model at inference: the rendered
prompt, then per assistant turn the reply's tokens plus the end-of-turn token (trained on), then the template's
continuation with the tool results (not trained on). The loss mask is 1 only on tokens the model is to write.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from orchestra.backends.chat_format import _assistant_text
from orchestra.envs.routerbench.env import PROVIDERS, RouterBench, parse_choice
from orchestra.preferences import Preferences
from orchestra.task import Task
from orchestra.tools.spec import ToolSpec
from orchestra.train.config import PreferenceMix
from orchestra.types import Message, Trajectory

PROVIDER_LABELS = {"anthropic": "claude", "openai": "gpt", "mistral": "mistral/mixtral", "meta": "llama",
                   "01-ai": "yi", "wizardlm": "wizardlm"}


@dataclass(frozen=True, slots=True)
class Example:
    """One training task with the preference it is trained under and the models that preference rules out.

    The task itself carries what the pool looks like for it (`RouterBench.offer`: offered models, price factors).
    `family` is the preference family ("default", "avoid", or with the paper sampler "corner", "cheapest",
    "accuracy"); the demonstration policy reads it to set its cost budget."""

    task: Task
    preferences: Preferences
    avoided: frozenset[str] = frozenset()
    family: str = "default"


def avoid_preference(provider: str, models: Sequence[str], cost_weight: float = 0.5) -> tuple[Preferences, frozenset[str]]:
    """The "avoid <provider> models" preference over `models`, and the set of models it rules out."""
    avoided = frozenset(m for m in models if PROVIDERS.get(m) == provider)
    label = PROVIDER_LABELS.get(provider, provider)
    weights = {m: 0.0 if m in avoided else 1.0 for m in models}
    return Preferences(weights, outcome=1.0, cost=cost_weight, instruction=f"Avoid {label} models."), avoided


def default_preference(cost_weight: float = 0.5) -> Preferences:
    return Preferences(outcome=1.0, cost=cost_weight)


def sample_examples(env: RouterBench, mix: PreferenceMix, seed: int, limit: int | None = None) -> list[Example]:
    """Every task of `env` (or the first `limit` after a seeded shuffle) with its sampled preference (and, with the
    paper sampler, its offered models and prices). Each draw is seeded by (seed, task id)."""
    tasks = list(env.tasks())
    random.Random(seed).shuffle(tasks)
    if limit is not None:
        tasks = tasks[:limit]
    if mix.sampler == "paper":
        return paper_examples(env, tasks, mix, seed)
    out = []
    for task in tasks:
        rng = random.Random(f"{seed}/{task.id}")
        if mix.avoid_providers and rng.random() < mix.avoid_share:
            prefs, avoided = avoid_preference(rng.choice(mix.avoid_providers), env.models, mix.cost_weight)
            out.append(Example(task, prefs, avoided, "avoid"))
        else:
            out.append(Example(task, default_preference(mix.cost_weight)))
    return out


def paper_examples(env: RouterBench, tasks: Sequence[Task], mix: PreferenceMix, seed: int) -> list[Example]:
    """`tasks` under the paper's scheme (`orchestra.synth.preferences`): offered subset, repricing, P.

    RouterBench prices are per query, so the table handed to the sampler holds each model's mean recorded $ per
    query (as its input and output price); a drawn override divided by it is the model's price factor."""
    from orchestra.backends.pricing import ModelPrice, PriceTable
    from orchestra.synth.preferences import PreferenceDistribution, candidates_from, sample_for_example

    base = {m: env.stats.mean_cost_usd[m] for m in env.models}
    table = PriceTable("routerbench-mean-per-query", {m: ModelPrice(c, c, PROVIDERS.get(m)) for m, c in base.items()})
    distribution = PreferenceDistribution(
        family_weights=dict(mix.families), min_tools=min(mix.min_models, len(env.models)),
        avoid_providers=frozenset(mix.avoid_providers) or None,
        price_weights={"base": 1.0 - mix.reprice_share, "multipliers": mix.reprice_share},
        multiplier_range=mix.multiplier_range)
    candidates = candidates_from(env.models, PROVIDERS)
    out = []
    for task in tasks:
        sample = sample_for_example(seed, task.id, candidates, table, distribution)
        overrides = sample.price_overrides.get("models", {})
        factors = {m: float(overrides[m]["input"]) / base[m] for m in sample.tools if m in overrides and base[m] > 0}
        avoided = frozenset(m for m in sample.tools if m in sample.banned_tools or PROVIDERS.get(m) in
                            sample.banned_providers)
        out.append(Example(env.offer(task, sample.tools, factors), sample.preferences, avoided, sample.family))
    return out


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of one conversation and the loss mask (1 = written by the model, trained on)."""

    ids: tuple[int, ...]
    mask: tuple[int, ...]


def encode_conversation(backend: object, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Encoded:
    """The ids `LocalBackend` would hold after this conversation, with assistant tokens masked in.

    `backend` is a `LocalBackend` (typed loosely so this module imports no torch).
    """
    fmt = backend.chat_format  # type: ignore[attr-defined]
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    end_id = _end_of_turn_id(backend)
    end_text = tokenizer.decode([end_id], skip_special_tokens=False)
    first = next(i for i, m in enumerate(messages) if m.role == "assistant")
    ids = list(_encode(tokenizer, fmt.render(messages[:first], tools, add_generation_prompt=True)))
    mask = [0] * len(ids)
    assistant_indices = [i for i, m in enumerate(messages) if m.role == "assistant"]
    for n, i in enumerate(assistant_indices):
        reply = _encode(tokenizer, _assistant_text(messages[i])) + [end_id]
        ids += reply
        mask += [1] * len(reply)
        following = assistant_indices[n + 1] if n + 1 < len(assistant_indices) else None
        if following is None:
            break
        closing, delta = fmt.continuation(messages[: i + 1], messages[i + 1 : following], tools)
        rest = _encode(tokenizer, closing.removeprefix(end_text) + delta)
        ids += rest
        mask += [0] * len(rest)
    return Encoded(tuple(ids), tuple(mask))


def consulted_pair_disagreed(trajectory: Trajectory) -> bool | None:
    """For a consult demonstration (two parallel asks, then an answer): did the two answers differ? None otherwise."""
    if not trajectory.turns or len(trajectory.turns[0].observations) != 2:
        return None
    first, second = (parse_choice(o.content) for o in trajectory.turns[0].observations)
    return first is None or first != second


def rebalance(items: Sequence[tuple[Example, Trajectory]], disagreement_share: float, n: int,
              seed: int) -> list[tuple[Example, Trajectory]]:
    """`n` demonstrations in which consult episodes whose two answers disagree make up `disagreement_share` of the
    consult episodes (sampling with replacement from the rarer kind when needed). Disagreements are the minority
    (~25%) yet hold the one decision that matters, escalating; without rebalancing a small model never learns it."""
    rng = random.Random(seed)
    direct = [x for x in items if consulted_pair_disagreed(x[1]) is None]
    agree = [x for x in items if consulted_pair_disagreed(x[1]) is False]
    disagree = [x for x in items if consulted_pair_disagreed(x[1]) is True]
    consult_share = (len(agree) + len(disagree)) / max(1, len(items))
    n_consult = round(n * consult_share)
    n_disagree = round(n_consult * disagreement_share) if disagree else 0
    picked = _draw(rng, direct, n - n_consult) + _draw(rng, agree, n_consult - n_disagree) + _draw(
        rng, disagree, n_disagree)
    rng.shuffle(picked)
    return picked


def _draw(rng: random.Random, pool: Sequence[tuple[Example, Trajectory]], k: int) -> list[tuple[Example, Trajectory]]:
    if k <= 0 or not pool:
        return []
    if k <= len(pool):
        return rng.sample(list(pool), k)
    return list(pool) + [rng.choice(pool) for _ in range(k - len(pool))]


def _encode(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]


def _end_of_turn_id(backend: object) -> int:
    tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id in backend.end_ids:  # type: ignore[attr-defined]
            return token_id
    return min(backend.end_ids)  # type: ignore[attr-defined]
