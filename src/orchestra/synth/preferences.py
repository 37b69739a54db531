"""Preference sampling for training: per example, a tool subset, repriced models and a preference vector P.

The paper (REFERENCE.md section 3) gives every training example a random subset of tools, randomized prices (from
several providers' price lists) and a preference vector with its natural-language instruction appended to the task.
`sample_preference` draws all three for one example from a `PreferenceDistribution`; `sample_for_example` seeds the
draw from (seed, example id), so a sample does not depend on the order examples are visited in and a resumed run
draws the same preferences again.

Candidates are what the reward counts (`Trajectory.tool_counts()` keys): tool names, or model names for tools that
take the model as an argument. Families of P (each p in [0, 1]):
- corner: a uniformly drawn non-zero corner of [0, 1]^(n+3) (every weight 0 or 1);
- avoid: one candidate, or every candidate of one provider, is to be avoided: p = 0 for them, p = 1 for the other
  offered candidates and p_outcome = 1. The reward cannot go below zero for a call (every p >= 0), so avoiding X is
  taught by rewarding the alternatives; the sample also carries the ban set, for evaluation to check adherence;
- cheapest: "the cheapest approach that works": p_outcome = 1, p_cost high (1 by default);
- accuracy: "accuracy first": p_outcome = 1, every other weight 0.
Candidates in `always_include` (e.g. `answer`) are offered every time, never avoided and weigh 0 in P.

Prices: keep the base table, pick one of the alternative provider lists, or multiply every model's (and tool's)
price by its own log-uniform factor (input and output together, so a model keeps its input/output ratio). The result
is an override mapping for `PriceTable.with_overrides`; providers are carried over, so bans by provider still work.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from orchestra.backends.pricing import PriceTable
from orchestra.errors import ConfigError
from orchestra.preferences import Limits, Preferences, avoiding

Family = Literal["corner", "avoid", "cheapest", "accuracy"]
PriceScheme = Literal["base", "multipliers", "list"]
FAMILIES: tuple[Family, ...] = ("corner", "avoid", "cheapest", "accuracy")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One thing the orchestrator may call, named as the reward counts it, with its provider (for "avoid X")."""

    name: str
    provider: str | None = None


@dataclass(frozen=True)
class PreferenceDistribution:
    """How preferences, tool subsets and prices are drawn. Every field has a default that runs as is."""

    family_weights: Mapping[Family, float] = field(
        default_factory=lambda: MappingProxyType({"corner": 0.4, "avoid": 0.2, "cheapest": 0.2, "accuracy": 0.2})
    )
    min_tools: int = 1
    """Fewest optional candidates offered (the `always_include` ones come on top)."""
    max_tools: int | None = None
    """Most optional candidates offered; None for all of them."""
    always_include: frozenset[str] = frozenset()
    avoid_providers: frozenset[str] | None = None
    """Providers an "avoid" preference may name; None for any provider among the offered candidates."""
    avoid_provider_share: float = 0.5
    """Share of "avoid" draws that name a provider (when one is eligible) rather than a single candidate."""
    cheapest_cost_weight: float = 1.0
    """p_cost of the "cheapest that works" family."""
    price_weights: Mapping[PriceScheme, float] = field(
        default_factory=lambda: MappingProxyType({"base": 0.2, "multipliers": 0.5, "list": 0.3})
    )
    """Relative odds of each price scheme; "list" is skipped when `price_lists` is empty."""
    multiplier_range: tuple[float, float] = (0.25, 4.0)
    price_lists: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Alternative price lists by name, each in the price file's shape ({"models": {...}, "tools": {...}})."""

    def __post_init__(self) -> None:
        if any(f not in FAMILIES for f in self.family_weights):
            raise ConfigError(f"family_weights: families are {', '.join(FAMILIES)}")
        if any(w < 0 for w in self.family_weights.values()) or sum(self.family_weights.values()) <= 0:
            raise ConfigError("family_weights: weights must be >= 0 with a positive sum")
        if any(w < 0 for w in self.price_weights.values()) or sum(self.price_weights.values()) <= 0:
            raise ConfigError("price_weights: weights must be >= 0 with a positive sum")
        low, high = self.multiplier_range
        if not 0 < low <= high:
            raise ConfigError("multiplier_range: needs 0 < low <= high")
        if not (0 <= self.avoid_provider_share <= 1 and 0 <= self.cheapest_cost_weight <= 1):
            raise ConfigError("avoid_provider_share and cheapest_cost_weight must be in [0, 1]")
        if self.min_tools < 0 or (self.max_tools is not None and self.max_tools < self.min_tools):
            raise ConfigError("min_tools/max_tools: needs 0 <= min_tools <= max_tools")


@dataclass(frozen=True)
class PreferenceSample:
    """What one training example gets: the candidates offered, P with its instruction, prices and the ban set."""

    family: Family
    tools: tuple[str, ...]
    preferences: Preferences
    price_scheme: PriceScheme
    price_source: str
    """"base", "multipliers" or the name of the alternative list."""
    price_overrides: Mapping[str, Any]
    banned_tools: frozenset[str] = frozenset()
    banned_providers: frozenset[str] = frozenset()

    def prices(self, base: PriceTable) -> PriceTable:
        return base.with_overrides(self.price_overrides)

    def limits(self, base: Limits | None = None) -> Limits:
        """`base` (default `Limits()`) with this sample's bans added (to check adherence, or to enforce the ban)."""
        base = base or Limits()
        return Limits(base.max_turns, base.budget_usd, base.banned_tools | self.banned_tools,
                      base.banned_providers | self.banned_providers)


def sample_for_example(
    seed: int, example_id: str, candidates: Sequence[Candidate], prices: PriceTable,
    distribution: PreferenceDistribution = PreferenceDistribution(),
) -> PreferenceSample:
    """The sample of one example, a pure function of (seed, example_id) and the arguments."""
    # A str seed is hashed with SHA-512 by `random`, stable across processes (unlike hash()).
    return sample_preference(random.Random(f"{seed}/{example_id}"), candidates, prices, distribution)


def sample_preference(
    rng: random.Random, candidates: Sequence[Candidate], prices: PriceTable,
    distribution: PreferenceDistribution = PreferenceDistribution(),
) -> PreferenceSample:
    """Draw a subset, a family, P with its instruction, and prices, in that order, from `rng`."""
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ConfigError("candidates: names must be unique")
    missing = distribution.always_include - set(names)
    if missing:
        raise ConfigError(f"always_include: {sorted(missing)} are not candidates")
    offered = _draw_subset(rng, candidates, distribution)
    optional = [c for c in offered if c.name not in distribution.always_include]
    kept = len(offered) > len(optional)  # an always-included candidate stays usable whatever is avoided
    can_avoid = any(_avoid_options(optional, distribution, kept))
    feasible = {f: w for f, w in distribution.family_weights.items() if w > 0 and (f != "avoid" or can_avoid)}
    if not feasible:
        raise ConfigError("family_weights: only 'avoid' has weight, but nothing offered can be avoided")
    family: Family = _weighted_choice(rng, feasible)
    banned_tools: frozenset[str] = frozenset()
    banned_providers: frozenset[str] = frozenset()
    if family == "corner":
        preferences = _corner(rng, optional)
    elif family == "avoid":
        preferences, banned_tools, banned_providers = _avoid(rng, optional, distribution, kept)
    elif family == "cheapest":
        preferences = Preferences(outcome=1.0, cost=distribution.cheapest_cost_weight,
                                  instruction=rng.choice(_CHEAPEST))
    else:
        preferences = Preferences(outcome=1.0, instruction=rng.choice(_ACCURACY))
    scheme, source, overrides = _draw_prices(rng, prices, distribution)
    return PreferenceSample(
        family=family, tools=tuple(c.name for c in offered), preferences=preferences, price_scheme=scheme,
        price_source=source, price_overrides=overrides, banned_tools=banned_tools, banned_providers=banned_providers,
    )


def candidates_from(names: Iterable[str], providers: Mapping[str, str | None] | None = None) -> list[Candidate]:
    """Candidates for `names`, with providers looked up in `providers` (e.g. from the price table)."""
    providers = providers or {}
    return [Candidate(n, providers.get(n)) for n in names]


_CHEAPEST = (
    "Solve the task as cheaply as you can: use the cheapest tool that still gets it right.",
    "Cost matters to me: pick the least expensive approach that works.",
)
_ACCURACY = (
    "Accuracy comes first: use whatever tools give the best answer, whatever they cost or however long they take.",
    "Getting the answer right is all that matters here; cost and time are no concern.",
)


def _draw_subset(rng: random.Random, candidates: Sequence[Candidate],
                 distribution: PreferenceDistribution) -> list[Candidate]:
    optional = [c for c in candidates if c.name not in distribution.always_include]
    high = len(optional) if distribution.max_tools is None else min(distribution.max_tools, len(optional))
    low = min(distribution.min_tools, high)
    chosen = set(rng.sample(range(len(optional)), rng.randint(low, high)))
    keep = {optional[i].name for i in chosen} | distribution.always_include
    return [c for c in candidates if c.name in keep]  # the caller's order, so prompts list tools stably


def _corner(rng: random.Random, optional: Sequence[Candidate]) -> Preferences:
    while True:  # rejection keeps the draw uniform over the non-zero corners
        bits = [rng.random() < 0.5 for _ in range(len(optional) + 3)]
        if any(bits):
            break
    tool_bits, (outcome, cost, latency) = bits[:-3], bits[-3:]
    liked = [c.name for c, on in zip(optional, tool_bits, strict=True) if on]
    parts = []
    if outcome:
        parts.append("getting the answer right matters")
    if cost:
        parts.append("keep the cost low")
    if latency:
        parts.append("answer quickly")
    if liked:
        parts.append("prefer using " + ", ".join(liked))
    return Preferences(
        tool_weights={c.name: float(on) for c, on in zip(optional, tool_bits, strict=True)},
        outcome=float(outcome), cost=float(cost), latency=float(latency),
        instruction="User preference: " + "; ".join(parts) + ".",
    )


def _avoid_options(optional: Sequence[Candidate], distribution: PreferenceDistribution, kept: bool
                   ) -> tuple[list[str], bool]:
    """(providers an "avoid" draw may name, whether it may name a single candidate) for this subset. Whatever is
    avoided, an offered candidate remains usable (`kept`: an always-included one does): avoiding everything offered
    is not a preference anyone can follow."""
    providers = sorted({c.provider for c in optional if c.provider
                        and (distribution.avoid_providers is None or c.provider in distribution.avoid_providers)
                        and (kept or any(o.provider != c.provider for o in optional))})
    share = distribution.avoid_provider_share
    return (providers if share > 0 else []), len(optional) >= (1 if kept else 2) and share < 1


def _avoid(rng: random.Random, optional: Sequence[Candidate], distribution: PreferenceDistribution, kept: bool
           ) -> tuple[Preferences, frozenset[str], frozenset[str]]:
    providers, single = _avoid_options(optional, distribution, kept)
    if providers and (not single or rng.random() < distribution.avoid_provider_share):
        provider = rng.choice(providers)
        avoided = {c.name for c in optional if c.provider == provider}
        instruction = f"Do not use any model from {provider}."
        bans: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset({provider}))
    else:
        name = rng.choice(optional).name
        avoided = {name}
        instruction = f"Do not use {name}."
        bans = (frozenset({name}), frozenset())
    return avoiding(avoided, [c.name for c in optional], instruction), *bans


def _draw_prices(rng: random.Random, prices: PriceTable, distribution: PreferenceDistribution
                 ) -> tuple[PriceScheme, str, Mapping[str, Any]]:
    weights = {s: w for s, w in distribution.price_weights.items()
               if w > 0 and (s != "list" or distribution.price_lists)}
    if not weights:
        raise ConfigError("price_weights: only 'list' has weight, but price_lists is empty")
    scheme: PriceScheme = _weighted_choice(rng, weights)
    if scheme == "base":
        return scheme, "base", {}
    if scheme == "list":
        name = rng.choice(sorted(distribution.price_lists))
        return scheme, name, distribution.price_lists[name]
    low, high = distribution.multiplier_range
    models = {}
    for name in sorted(prices.models):
        price, factor = prices.models[name], _log_uniform(rng, low, high)
        models[name] = {"input": _round(price.input_usd_per_mtok * factor),
                        "output": _round(price.output_usd_per_mtok * factor), "provider": price.provider}
    tools = {}
    for name in sorted(prices.tools):
        card, factor = prices.tools[name], _log_uniform(rng, low, high)
        tools[name] = {"per_call": _round(card.usd_per_call * factor),
                       "per_second": _round(card.usd_per_second * factor)}
    return scheme, "multipliers", {"models": models, "tools": tools}


def _weighted_choice(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    keys = sorted(weights)  # sorted: the draw must not depend on the mapping's insertion order
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _round(value: float) -> float:
    """Three significant digits: prices the orchestrator reads in its prompt stay short."""
    return float(f"{value:.3g}")
