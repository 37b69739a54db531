"""RouterBench training: examples with sampled preferences, consult-and-compare demonstrations, and their balance.

Preferences (per example, seeded by (seed, task id) so a resumed run draws the same ones):
- default: p_outcome = 1, p_cost = `cost_weight`, no instruction;
- avoid: one provider's models are to be avoided: the instruction names them ("Avoid claude models.") and P weighs
  every other model 1 and the avoided ones 0 (the paper's form: the reward cannot go below zero for a call, so
  avoidance is taught by rewarding the alternatives). The demonstration policy is refit without the avoided models.
- `sampler: paper`: offered subsets, repricing and P families (`paper_examples`).
- new models (`new_model_share`): some offered models left out of the price list and introduced in the request under
  the handles new1, new2, ... (`with_new_models`), so a student learns to call a model it never saw by its
  introduction. The demonstration policy plans an introduced model as its introduction describes it (the listed
  model it is like, at the stated ratio of that model's price), never by the recorded outcomes behind the handle.

Demonstrations: the consult-and-compare policy (`orchestra.envs.routerbench.demonstrations`) fit on the training
rows, refit per set of avoided models, offered models, prices and preference family, run through the real episode
loop. `rebalance` then makes disagreements (where escalating is right) half of the consult episodes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from typing import Any

from orchestra.envs.base import Demonstration, Example, draw
from orchestra.envs.routerbench.config import MAX_TURNS, PreferenceMix
from orchestra.envs.routerbench.data import PROVIDERS
from orchestra.envs.routerbench.demonstrations import (
    ConsultPolicy,
    Offer,
    consult_backend,
    fit_consult_policy,
)
from orchestra.envs.routerbench.env import RouterBench, shown_letter
from orchestra.envs.routerbench.prompt import compact_prompt
from orchestra.preferences import Limits, Preferences, avoiding
from orchestra.rollout.batch import EpisodeSettings, run_task
from orchestra.rollout.guard import plain
from orchestra.task import Task
from orchestra.types import Trajectory

PROVIDER_LABELS = {"anthropic": "claude", "openai": "gpt", "mistral": "mistral/mixtral", "meta": "llama",
                   "01-ai": "yi", "wizardlm": "wizardlm"}


def avoid_preference(provider: str, models: Sequence[str], cost_weight: float = 0.5) -> tuple[Preferences, frozenset[str]]:
    """The "avoid <provider> models" preference over `models`, and the set of models it rules out."""
    avoided = frozenset(m for m in models if PROVIDERS.get(m) == provider)
    label = PROVIDER_LABELS.get(provider, provider)
    return avoiding(avoided, models, f"Avoid {label} models.", cost=cost_weight), avoided


def default_preference(cost_weight: float = 0.5) -> Preferences:
    return Preferences(outcome=1.0, cost=cost_weight)


def sample_examples(env: RouterBench, mix: PreferenceMix, seed: int, limit: int | None = None,
                    models: Sequence[str] | None = None) -> list[Example]:
    """Every task of `env` (or the first `limit` after a seeded shuffle) with its sampled preference (and, with the
    paper sampler, its offered models and prices). Each draw is seeded by (seed, task id). `models`: offer only
    these (the others stay unseen in training)."""
    tasks = list(env.tasks())
    random.Random(seed).shuffle(tasks)
    if limit is not None:
        tasks = tasks[:limit]
    if models is not None:
        tasks = [env.offer(task, models) for task in tasks]
    if mix.sampler == "paper":
        return paper_examples(env, tasks, mix, seed, models)
    out = []
    for task in tasks:
        rng = random.Random(f"{seed}/{task.id}")
        offered = list(models or env.models)
        if mix.vary_models or mix.vary_prices:
            task = varied_offer(env, task, offered, mix, random.Random(f"{seed}/{task.id}/offer"))
            offered = list(task.metadata["offered"])
        usable = [p for p in mix.avoid_providers if any(PROVIDERS.get(m) != p for m in offered)]
        if usable and rng.random() < mix.avoid_share:  # never an avoid that rules out everything offered
            prefs, avoided = avoid_preference(rng.choice(usable), offered, mix.cost_weight)
            example = Example(task, prefs, avoided, "avoid")
        else:
            example = Example(task, default_preference(mix.cost_weight))
        if mix.new_model_share:
            example = with_new_models(env, example, mix, random.Random(f"{seed}/{task.id}/new"))
        out.append(example)
    return out


def with_new_models(env: RouterBench, example: Example, mix: PreferenceMix, rng: random.Random) -> Example:
    """`example`, with probability `mix.new_model_share` introducing 1 to `mix.max_new_models` of its offered models
    (none it avoids, one at least left listed) as new models, in random order under the handles new1, new2, ...
    (`env.new_handles`), each repriced by a log-uniform factor in `mix.new_model_prices`: the model behind a handle
    changes from example to example, so calling one is learnt as reading its introduction, never as recalling a
    name; and repriced, a known model resembles at a new price what no known model is (a model as accurate as
    claude-1 at a tenth of its price)."""
    offered = list(example.task.metadata.get("offered") or env.models)
    candidates = [m for m in offered if m not in example.avoided]
    most = min(mix.max_new_models, len(candidates), len(offered) - 1)
    if most < 1 or rng.random() >= mix.new_model_share:
        return example
    new = rng.sample(candidates, rng.randint(1, most))
    lo, hi = (math.log(x) for x in mix.new_model_prices)
    factors = {**(example.task.metadata.get("price_factors") or {}), **{m: math.exp(rng.uniform(lo, hi)) for m in new}}
    task = env.introduce(env.offer(example.task, offered, factors), new)
    return Example(task, example.preferences, example.avoided, example.family)


def varied_offer(env: RouterBench, task: Task, models: Sequence[str], mix: PreferenceMix,
                 rng: random.Random) -> Task:
    """`task` offering a random subset of `models` (at least `mix.min_models`; all of them unless
    `mix.vary_models`), with probability `mix.reprice_share` repricing `mix.repriced_models` of them (default: every
    one) by log-uniform factors in `mix.multiplier_range`."""
    chosen = sorted(models)
    if mix.vary_models:
        low = min(mix.min_models, len(models))
        chosen = sorted(rng.sample(list(models), rng.randint(low, len(models))))
    factors = {}
    if rng.random() < mix.reprice_share:
        lo, hi = (math.log(x) for x in mix.multiplier_range)
        repriced = chosen if mix.repriced_models is None else sorted(
            rng.sample(chosen, min(mix.repriced_models, len(chosen))))
        factors = {m: math.exp(rng.uniform(lo, hi)) for m in repriced}
    return env.offer(task, chosen, factors)


def paper_examples(env: RouterBench, tasks: Sequence[Task], mix: PreferenceMix, seed: int,
                   models: Sequence[str] | None = None) -> list[Example]:
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
    candidates = candidates_from(models or env.models, PROVIDERS)
    out = []
    for task in tasks:
        sample = sample_for_example(seed, task.id, candidates, table, distribution)
        overrides = sample.price_overrides.get("models", {})
        factors = {m: float(overrides[m]["input"]) / base[m] for m in sample.tools if m in overrides and base[m] > 0}
        avoided = frozenset(m for m in sample.tools if m in sample.banned_tools or PROVIDERS.get(m) in
                            sample.banned_providers)
        out.append(Example(env.offer(task, sample.tools, factors), sample.preferences, avoided, sample.family))
    return out

COST_SHARE = {"default": 0.3, "cheapest": 0.1, "accuracy": 1.0}
"""The demonstration policy's cost budget (share of always asking the escalation model) per preference family."""
DEMO_SETTINGS = EpisodeSettings(limits=Limits(max_turns=MAX_TURNS), build_prompt=compact_prompt,
                                render_observation=plain)


async def collect_demonstrations(env: RouterBench, examples: Sequence[Example]) -> list[Demonstration]:
    """Run the consult policy, refit per set of avoided models, offered models, prices and family, on every
    example. Where the policy's model has no recorded answer for the row, it is refit without the row's missing
    models, so no demonstration shows a refused call; an example with no usable model makes no demonstration."""
    policies: dict[tuple[Any, ...], ConsultPolicy] = {}
    out = []
    for example in examples:
        trajectory = await _demonstrate(env, example, example.avoided, policies)
        offered = example.task.metadata.get("offered") or env.models
        missing = frozenset(offered) - frozenset(env.row(example.task.id).records)
        if trajectory.termination != "answered" and missing and set(offered) - example.avoided - missing:
            trajectory = await _demonstrate(env, example, example.avoided | missing, policies)
        if trajectory.termination == "answered":
            out.append((example, trajectory))
    return out


async def _demonstrate(env: RouterBench, example: Example, ruled_out: frozenset[str],
                       policies: dict[tuple[Any, ...], ConsultPolicy]) -> Trajectory:
    """The consult policy's episode on `example`, fit (once per key, kept in `policies`) without `ruled_out`."""
    offer = Offer.of(example.task.metadata, env.models)
    key = (ruled_out, example.family, *offer.key())
    if key not in policies:
        policies[key] = fit_consult_policy(
            env.rows, allowed=[m for m in offer.offered if m not in ruled_out], price_factors=offer.factors,
            max_cost_share=COST_SHARE.get(example.family, COST_SHARE["default"]), stand_ins=offer.stand_ins)
    result = await run_task(env, example.task, consult_backend(policies[key], offer.names), DEMO_SETTINGS,
                            preferences=example.preferences)
    return result.trajectory


def consulted_pair_disagreed(trajectory: Trajectory) -> bool | None:
    """For a consult demonstration (two parallel asks, then an answer): did the two answers differ? None otherwise."""
    if not trajectory.turns or len(trajectory.turns[0].observations) != 2:
        return None
    first, second = (shown_letter(o.content) for o in trajectory.turns[0].observations)
    return first is None or first != second


def first_decision(trajectory: Trajectory, new: Collection[str] = ()) -> tuple[tuple[str, str], ...]:
    """What the prompt alone decided: the first turn's calls as (tool, model) pairs, e.g. (("ask", "mixtral"),
    ("ask", "yi-34b")) or (("answer", "gpt-4"),); a model in `new` (introduced as new in the request) is "new", one
    decision whatever its handle."""
    if not trajectory.turns:
        return ()
    named = ((c.name, str(c.arguments.get("model"))) for c in trajectory.turns[0].completion.tool_calls)
    return tuple((tool, "new" if model in new else model) for tool, model in named)


def balance_decisions(items: Sequence[Demonstration], disagreement_share: float | None, n: int, seed: int,
                      temper: float, *, per_instruction: bool = False) -> list[Demonstration]:
    """`n` demonstrations in which each first decision (`first_decision`) gets a share proportional to its count to
    the power `temper` (1: as sampled; 0: every decision equally often), each group then drawn as `rebalance` draws
    (disagreements `disagreement_share` of its consult episodes). A decision that only a changed price or an
    instruction calls for is rare among the demonstrations (answering gpt-4 outright when it is five times cheaper);
    tempering shows it often enough for a small model to learn it, not only the usual decision for the question.
    With `per_instruction`, a group is one (instruction, first decision) pair: each instruction's decisions are
    tempered on their own counts, so the examples where an instruction leaves the usual decision unchanged are not
    outweighed by those where another instruction changes it."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Demonstration]] = {}
    for item in items:
        decision = first_decision(item[1], item[0].task.metadata.get("new_models") or ())
        groups.setdefault((item[0].preferences.instruction if per_instruction else "", decision), []).append(item)
    keys = sorted(groups)
    weights = [len(groups[k]) ** temper for k in keys]
    quotas = [n * w / sum(weights) for w in weights]
    sizes = [math.floor(q) for q in quotas]  # largest remainders take the rest, so the sizes add up to n
    for i in sorted(range(len(keys)), key=lambda i: sizes[i] - quotas[i])[: n - sum(sizes)]:
        sizes[i] += 1
    picked: list[Demonstration] = []
    for i, (key, size) in enumerate(zip(keys, sizes, strict=True)):
        group = groups[key]
        picked += (rebalance(group, disagreement_share, size, seed + i) if disagreement_share is not None
                   else draw(random.Random(seed + i), group, size))
    random.Random(seed).shuffle(picked)
    return picked


def rebalance(items: Sequence[Demonstration], disagreement_share: float, n: int,
              seed: int) -> list[Demonstration]:
    """`n` demonstrations in which consult episodes whose two answers disagree make up `disagreement_share` of the
    consult episodes (sampling with replacement from the rarer kind when needed; all of one kind when the other is
    absent, so that `n` are always drawn). Disagreements are the minority (~25%) yet hold the one decision that
    matters, escalating; without rebalancing a small model never learns it."""
    rng = random.Random(seed)
    direct = [x for x in items if consulted_pair_disagreed(x[1]) is None]
    agree = [x for x in items if consulted_pair_disagreed(x[1]) is False]
    disagree = [x for x in items if consulted_pair_disagreed(x[1]) is True]
    consult_share = (len(agree) + len(disagree)) / max(1, len(items))
    n_consult = round(n * consult_share)
    n_disagree = (round(n_consult * disagreement_share) if agree else n_consult) if disagree else 0
    picked = draw(rng, direct, n - n_consult) + draw(rng, agree, n_consult - n_disagree) + draw(
        rng, disagree, n_disagree)
    rng.shuffle(picked)
    return picked
