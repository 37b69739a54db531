"""Preference sampling: reproducible per example, subsets, the four families, prices and bans."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from orchestra.backends.pricing import PriceTable
from orchestra.errors import ConfigError
from orchestra.preferences import Limits
from orchestra.synth import (
    Candidate,
    PreferenceDistribution,
    candidates_from,
    sample_for_example,
    sample_preference,
)

TABLE = PriceTable.default()
CANDIDATES = [
    Candidate("search"),
    Candidate("python"),
    Candidate("gpt-5", "openai"),
    Candidate("gpt-5-mini", "openai"),
    Candidate("qwen3-32b", "qwen"),
    Candidate("answer"),
]
ONLY = {f: PreferenceDistribution(family_weights={f: 1.0}, always_include=frozenset({"answer"}))
        for f in ("corner", "avoid", "cheapest", "accuracy")}


def _many(distribution: PreferenceDistribution, n: int = 200, seed: int = 7):
    return [sample_for_example(seed, f"ex-{i}", CANDIDATES, TABLE, distribution) for i in range(n)]


def test_same_seed_and_example_give_the_same_sample_in_any_order():
    ids = [f"ex-{i}" for i in range(20)]
    forward = {i: sample_for_example(3, i, CANDIDATES, TABLE) for i in ids}
    backward = {i: sample_for_example(3, i, CANDIDATES, TABLE) for i in reversed(ids)}
    assert forward == backward
    other_seed = {i: sample_for_example(4, i, CANDIDATES, TABLE) for i in ids}
    assert other_seed != forward
    assert len({(s.family, s.tools, s.price_source) for s in forward.values()}) > 5


def test_subsets_respect_bounds_order_and_always_include():
    dist = PreferenceDistribution(min_tools=2, max_tools=3, always_include=frozenset({"answer"}))
    sizes = Counter()
    for s in _many(dist):
        assert "answer" in s.tools
        assert 2 <= len(s.tools) - 1 <= 3
        order = [c.name for c in CANDIDATES]
        assert list(s.tools) == sorted(s.tools, key=order.index)
        assert set(s.preferences.tool_weights) <= set(s.tools) - {"answer"}
        sizes[len(s.tools)] += 1
    assert set(sizes) == {3, 4}


def test_accuracy_first():
    for s in _many(ONLY["accuracy"], 20):
        assert s.family == "accuracy"
        assert s.preferences.vector(s.tools) == [0.0] * len(s.tools) + [1.0, 0.0, 0.0]
        assert "ccuracy" in s.preferences.instruction or "right" in s.preferences.instruction


def test_cheapest_that_works():
    for s in _many(ONLY["cheapest"], 20):
        assert (s.preferences.outcome, s.preferences.cost, s.preferences.latency) == (1.0, 1.0, 0.0)
        assert "cheap" in s.preferences.instruction or "expensive" in s.preferences.instruction


def test_avoid_zeroes_the_avoided_and_returns_the_ban_set():
    samples = _many(ONLY["avoid"])
    kinds = Counter()
    for s in samples:
        assert s.family == "avoid" and s.preferences.outcome == 1.0
        weights = s.preferences.tool_weights
        if s.banned_providers:
            (provider,) = s.banned_providers
            avoided = {c.name for c in CANDIDATES if c.provider == provider and c.name in s.tools}
            assert provider in s.preferences.instruction and avoided
            kinds["provider"] += 1
        else:
            (name,) = s.banned_tools
            avoided = {name}
            assert f"Do not use {name}." == s.preferences.instruction
            kinds["tool"] += 1
        assert "answer" not in avoided
        assert all(weights[n] == 0.0 for n in avoided)
        assert all(w == 1.0 for n, w in weights.items() if n not in avoided)
        limits = s.limits(Limits(max_turns=5, banned_tools=frozenset({"x"})))
        assert limits.max_turns == 5 and "x" in limits.banned_tools
        assert limits.banned_tools >= s.banned_tools and limits.banned_providers == s.banned_providers
    assert kinds["provider"] > 10 and kinds["tool"] > 10


def test_corners_are_binary_non_zero_and_cover_both_values():
    seen = Counter()
    for s in _many(ONLY["corner"]):
        vector = s.preferences.vector([n for n in s.tools if n != "answer"])
        assert set(vector) <= {0.0, 1.0} and any(vector)
        assert s.preferences.instruction.startswith("User preference: ")
        for key in ("outcome", "cost", "latency"):
            seen[(key, getattr(s.preferences, key))] += 1
    assert all(seen[(k, v)] > 40 for k in ("outcome", "cost", "latency") for v in (0.0, 1.0))


def test_family_mix_follows_the_weights():
    counts = Counter(s.family for s in _many(PreferenceDistribution(), 1000))
    assert 330 < counts["corner"] < 470 and all(130 < counts[f] < 270 for f in ("avoid", "cheapest", "accuracy"))


def test_avoid_falls_back_when_nothing_can_be_avoided():
    dist = PreferenceDistribution(family_weights={"avoid": 1.0, "accuracy": 1.0}, min_tools=0, max_tools=0,
                                  always_include=frozenset({"answer"}))
    assert {s.family for s in _many(dist, 30)} == {"accuracy"}
    only_avoid = PreferenceDistribution(family_weights={"avoid": 1.0}, min_tools=0, max_tools=0,
                                        always_include=frozenset({"answer"}))
    with pytest.raises(ConfigError):
        sample_preference(random.Random(0), CANDIDATES, TABLE, only_avoid)


def test_multiplied_prices_stay_in_range_and_keep_providers():
    dist = PreferenceDistribution(price_weights={"multipliers": 1.0}, multiplier_range=(0.5, 2.0))
    factors = []
    for s in _many(dist, 20):
        table = s.prices(TABLE)
        assert table.version.endswith("+overrides")
        for name, base in TABLE.models.items():
            new = table.model(name)
            assert new.provider == base.provider
            if base.input_usd_per_mtok:
                factor = new.input_usd_per_mtok / base.input_usd_per_mtok
                assert 0.5 * 0.995 <= factor <= 2.0 * 1.005
                # one factor per model: the input/output ratio is kept (up to rounding to 3 digits)
                assert new.output_usd_per_mtok / base.output_usd_per_mtok == pytest.approx(factor, rel=0.01)
                factors.append(factor)
        assert 0.005 <= table.tool("search").usd_per_call <= 0.02
    assert min(factors) < 0.7 and max(factors) > 1.4


def test_alternative_price_lists_and_base_prices():
    lists = {"provider-b": {"models": {"gpt-5": {"input": 2.0, "output": 16.0, "provider": "openai"}}}}
    dist = PreferenceDistribution(price_weights={"list": 1.0, "base": 1.0}, price_lists=lists)
    sources = Counter()
    for s in _many(dist, 60):
        sources[s.price_source] += 1
        table = s.prices(TABLE)
        if s.price_source == "provider-b":
            assert table.model("gpt-5").input_usd_per_mtok == 2.0
            assert table.model("gpt-5-mini") == TABLE.model("gpt-5-mini")
        else:
            assert s.price_overrides == {} and table is TABLE
    assert set(sources) == {"provider-b", "base"}
    with pytest.raises(ConfigError):
        sample_preference(random.Random(0), CANDIDATES, TABLE, PreferenceDistribution(price_weights={"list": 1.0}))


def test_bad_configurations_are_config_errors():
    with pytest.raises(ConfigError):
        PreferenceDistribution(family_weights={"bogus": 1.0})  # type: ignore[dict-item]
    with pytest.raises(ConfigError):
        PreferenceDistribution(family_weights={"corner": 0.0})
    with pytest.raises(ConfigError):
        PreferenceDistribution(min_tools=3, max_tools=2)
    with pytest.raises(ConfigError):
        sample_preference(random.Random(0), CANDIDATES, TABLE, PreferenceDistribution(always_include=frozenset({"z"})))
    with pytest.raises(ConfigError):
        sample_preference(random.Random(0), [Candidate("a"), Candidate("a")], TABLE)


def test_candidates_from_price_table_providers():
    providers = {name: price.provider for name, price in TABLE.models.items()}
    got = candidates_from(["gpt-5", "search"], providers)
    assert got == [Candidate("gpt-5", "openai"), Candidate("search", None)]


def test_avoid_can_be_restricted_to_named_providers():
    dist = PreferenceDistribution(family_weights={"avoid": 1.0, "accuracy": 1.0}, avoid_provider_share=1.0,
                                  avoid_providers=frozenset({"openai"}), always_include=frozenset({"answer"}))
    families = Counter()
    for s in _many(dist, 100):
        families[s.family] += 1
        if s.family == "avoid":
            assert s.banned_providers == {"openai"} and not s.banned_tools
            assert {"gpt-5", "gpt-5-mini"} & set(s.tools)  # only drawn when an openai model is offered
            assert all(s.preferences.tool_weights[n] == 0.0 for n in ("gpt-5", "gpt-5-mini") if n in s.tools)
    assert families["avoid"] > 20 and families["accuracy"] > 20
    no_openai = [c for c in CANDIDATES if c.provider != "openai"]
    for i in range(20):
        s = sample_for_example(1, str(i), no_openai, TABLE, dist)
        assert s.family == "accuracy"  # nothing offered can be avoided


def test_cheapest_cost_weight_is_configurable():
    dist = PreferenceDistribution(family_weights={"cheapest": 1.0}, cheapest_cost_weight=0.5)
    assert {s.preferences.cost for s in _many(dist, 10)} == {0.5}
    with pytest.raises(ConfigError):
        PreferenceDistribution(avoid_provider_share=1.5)


def test_avoid_always_leaves_an_offered_candidate_to_use():
    """Offered only one provider's models (or one model), "avoid" must not rule out all of them: the draw names
    nothing that empties the offer, and falls back to another family when nothing can be avoided."""
    one_provider = [Candidate("gpt-5", "openai"), Candidate("gpt-5-mini", "openai"), Candidate("qwen3-32b", "qwen")]
    dist = PreferenceDistribution(family_weights={"avoid": 1.0, "accuracy": 1.0}, min_tools=2, max_tools=2)
    samples = [sample_for_example(3, f"ex-{i}", one_provider, TABLE, dist) for i in range(300)]
    pairs = Counter(frozenset(s.tools) for s in samples)
    assert pairs[frozenset({"gpt-5", "gpt-5-mini"})] > 20  # the subset that one provider ban would empty was drawn
    for s in samples:
        if s.family == "avoid":
            banned = set(s.banned_tools) | {c.name for c in one_provider if c.provider in s.banned_providers}
            assert set(s.tools) - banned, (s.tools, s.preferences.instruction)
    single = [sample_for_example(3, f"one-{i}", one_provider, TABLE, PreferenceDistribution(
        family_weights={"avoid": 1.0, "accuracy": 1.0}, min_tools=1, max_tools=1)) for i in range(50)]
    assert {s.family for s in single} == {"accuracy"}
