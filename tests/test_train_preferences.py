"""Training under the paper's preference scheme: offered subsets, repricing and P families reach the environment,
the prompt and the demonstrations; the draws are seeded per example."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from orchestra import ScriptedBackend, Toolbox, run_episode
from orchestra.envs.routerbench.config import PreferenceMix
from orchestra.envs.routerbench.prompt import compact_prompt
from orchestra.envs.routerbench.training import collect_demonstrations, sample_examples
from orchestra.errors import ConfigError
from orchestra.train.config import SFTConfig
from tests.envs import model_call as call
from tests.envs import routerbench_env, routerbench_head


@pytest.fixture(scope="module")
def env(data_dir, tmp_path_factory):
    return routerbench_env(routerbench_head(data_dir, tmp_path_factory.mktemp("routerbench"), 80))


async def test_offer_restricts_the_models_and_reprices_their_recorded_cost(env):
    task = env.tasks()[0]
    row = env.row(task.id)
    offered = env.offer(task, ["yi-34b", "gpt-4"], {"yi-34b": 2.5})
    assert offered.metadata["prices_per_1k"] == {
        "gpt-4": round(env.stats.mean_cost_usd["gpt-4"] * 1000, 4),
        "yi-34b": round(env.stats.mean_cost_usd["yi-34b"] * 2.5 * 1000, 4)}
    prompt = compact_prompt(offered, [], None)[0].content
    assert "yi-34b" in prompt and "mixtral" not in prompt

    instance = env.start(offered)
    tr = await run_episode(offered, ScriptedBackend([call("ask", "mixtral") + call("ask", "yi-34b"),
                                                     call("answer", "yi-34b")]), Toolbox.of(instance.tools))
    refused, asked = tr.turns[0].observations
    assert refused.status == "tool_error" and "not offered" in refused.content
    assert asked.status == "ok"
    assert tr.cost_usd == pytest.approx(row.records["yi-34b"].cost_usd * 2.5)
    with pytest.raises(ConfigError, match="unknown models"):
        env.offer(task, ["gpt-5"])


def test_described_models_show_their_training_part_accuracy_on_the_task_type_and_the_checkpoint_needs_it(
        data_dir, tmp_path):
    from orchestra.envs.registry import load_suite
    from orchestra.evaluate.spec import _trained_prompt

    folder = routerbench_head(data_dir, tmp_path, 60)
    suite = load_suite({"name": "routerbench", "data": str(folder), "dev_fraction": 0.25, "part": "dev",
                        "describe_models": "accuracy"})
    task = next(t for t in suite.tasks if t.metadata["task_type"] == "winogrande")
    train_rows = [r for r in suite.train_env.rows if r.task_type == "winogrande"]
    right = sum(r.records["yi-34b"].correct for r in train_rows if "yi-34b" in r.records)
    share = round(100 * right / sum("yi-34b" in r.records for r in train_rows))
    system = compact_prompt(task, [], None)[0].content
    assert "% right on this task type" in system
    assert f"yi-34b {task.metadata['prices_per_1k']['yi-34b']:.2g} {share}%" in system
    offered = suite.env.offer(task, ["yi-34b", "gpt-4"], {"gpt-4": 0.2})
    assert set(offered.metadata["accuracy_on_type"]) == {"yi-34b", "gpt-4"}
    assert "mixtral" not in compact_prompt(offered, [], None)[0].content
    assert suite.prompt_name == "routerbench/compact+accuracy" and suite.identity["describe_models"] == "accuracy"
    plain = load_suite({"name": "routerbench", "data": str(folder)})
    assert "accuracy_on_type" not in plain.tasks[0].metadata and "%" not in compact_prompt(plain.tasks[0], [], None)[0].content
    with pytest.raises(ConfigError, match="trained with prompt 'routerbench/compact\\+accuracy'"):
        _trained_prompt(suite.prompt_name, plain, tmp_path)


def test_marked_price_changes_say_how_far_each_repriced_model_is_from_its_recorded_price(data_dir, tmp_path):
    from orchestra.envs.registry import load_suite
    from orchestra.envs.routerbench.training import avoid_preference
    from orchestra.evaluate.spec import _trained_prompt

    folder = routerbench_head(data_dir, tmp_path, 60)
    repriced = {"gpt-4": {"factor": 0.2}, "mixtral": {"factor": 10}, "yi-34b": {"per_call_usd": 1.0}}
    marked = load_suite({"name": "routerbench", "data": str(folder), "mark_price_changes": True,
                         "recorded_prices": repriced})
    prefs = avoid_preference("anthropic", marked.models)[0]
    system, user = (m.content for m in compact_prompt(marked.tasks[0], [], prefs))
    prices = marked.tasks[0].metadata["prices_per_1k"]
    assert f"gpt-4 {prices['gpt-4']:.2g}, " in system and "cheaper" not in system  # the list: prices only
    factor = 1.0 / marked.env.stats.mean_cost_usd["yi-34b"]  # a flat $/call, as a factor on the recorded price
    assert user.endswith(f"\nPrices changed: gpt-4 5x cheaper, mixtral 10x dearer, yi-34b {factor:.2g}x dearer."
                         "\nAvoid claude models.")
    assert marked.prompt_name == "routerbench/compact+changes" and marked.identity["mark_price_changes"]
    offered = marked.env.offer(marked.env.tasks()[0], ["gpt-4", "mixtral"], {"mixtral": 0.5})
    assert compact_prompt(offered, [], None)[1].content.endswith("\nPrices changed: mixtral 2x cheaper.")
    unchanged = marked.env.offer(marked.env.tasks()[0], ["gpt-4", "mixtral"])
    assert "Prices changed" not in compact_prompt(unchanged, [], None)[1].content
    plain = load_suite({"name": "routerbench", "data": str(folder), "recorded_prices": repriced})
    assert "Prices changed" not in compact_prompt(plain.tasks[0], [], None)[1].content
    assert "mark_price_changes" not in plain.identity  # unmarked runs keep their identity (and resume)
    with pytest.raises(ConfigError, match="trained with prompt 'routerbench/compact\\+changes'"):
        _trained_prompt(marked.prompt_name, plain, tmp_path)
    both = load_suite({"name": "routerbench", "data": str(folder), "mark_price_changes": True,
                       "describe_models": "accuracy"})
    assert both.prompt_name == "routerbench/compact+accuracy+changes"


def test_paper_sampler_draws_subsets_prices_and_every_family_reproducibly(env):
    mix = PreferenceMix(sampler="paper")
    examples = sample_examples(env, mix, seed=3, limit=120)
    assert [e.task.metadata for e in examples] == [e.task.metadata for e in sample_examples(env, mix, 3, 120)]
    families = Counter(e.family for e in examples)
    assert set(families) == {"corner", "avoid", "cheapest", "accuracy"}
    sizes = {len(e.task.metadata["offered"]) for e in examples}
    assert min(sizes) >= mix.min_models and len(sizes) > 3
    repriced = [e for e in examples if any(f != 1.0 for f in e.task.metadata["price_factors"].values())]
    assert 0.6 < len(repriced) / len(examples) < 0.95  # reprice_share 0.8
    low, high = mix.multiplier_range
    assert all(low * 0.99 <= f <= high * 1.01 for e in repriced for f in e.task.metadata["price_factors"].values())
    for e in examples:
        if e.family == "avoid":
            assert e.avoided and all(e.preferences.tool_weights[m] == 0.0 for m in e.avoided)
            assert e.preferences.instruction.startswith("Do not use")
        else:
            assert not e.avoided
        assert e.preferences.instruction in compact_prompt(e.task, [], e.preferences)[1].content


def test_demonstrations_use_only_offered_models_and_respect_avoidance(env):
    examples = sample_examples(env, PreferenceMix(sampler="paper"), seed=1, limit=24)
    demos = asyncio.run(collect_demonstrations(env, examples))
    assert len(demos) == 24
    for example, trajectory in demos:
        used = set(trajectory.tool_counts())
        assert used, "every demonstration calls at least one model"
        assert used <= set(example.task.metadata["offered"]) - example.avoided
        assert trajectory.termination == "answered" and trajectory.format_errors == 0


def test_an_unknown_preference_family_fails_at_load_naming_the_field():
    with pytest.raises(Exception, match="families"):
        SFTConfig.model_validate({"envs": [{"name": "routerbench", "preferences": {"sampler": "paper",
                                                                                     "families": {"fastest": 1.0}}}]})


@pytest.mark.parametrize("name", ["train_sft.yaml", "train_grpo.yaml", "train_grpo_paper_preferences.yaml"])
def test_example_training_configs_load(name):
    from pathlib import Path

    from orchestra.config import load_config
    from orchestra.train.config import GRPOConfig

    path = Path(__file__).resolve().parents[1] / "examples" / name
    model = SFTConfig if "sft" in name else GRPOConfig
    config = load_config(path, model, ())
    env = config.envs[0].config
    assert env.name == "routerbench" and env.dev_fraction == 0.1
    if "paper" in name:
        assert env.preferences.sampler == "paper" and env.preferences.multiplier_range == (0.25, 4.0)


@pytest.mark.parametrize("sampler", ["routerbench", "paper"])
def test_unseen_models_are_never_offered_in_training_examples_or_demonstrations(env, sampler):
    unseen = {"yi-34b", "claude-instant", "codellama-34b"}
    seen = [m for m in env.models if m not in unseen]
    examples = sample_examples(env, PreferenceMix(sampler=sampler), seed=2, limit=24, models=seen)
    demos = asyncio.run(collect_demonstrations(env, examples))
    offered = {m for e in examples for m in e.task.metadata["offered"]}
    assert offered and not offered & unseen
    assert not any(m in compact_prompt(e.task, [], e.preferences)[0].content for e in examples for m in unseen)
    used = Counter(m for _, trajectory in demos for m in trajectory.tool_counts())
    assert used and not set(used) & unseen
    everything = sample_examples(env, PreferenceMix(sampler=sampler), seed=2, limit=24)
    assert any(m in compact_prompt(e.task, [], None)[0].content for e in everything for m in unseen)


def test_train_models_naming_an_unknown_model_fails_at_load_with_the_field(data_dir, tmp_path):
    from orchestra.envs.registry import load_suite

    data = routerbench_head(data_dir, tmp_path, 20)
    with pytest.raises(ConfigError, match=r"train_models: unknown models \['gpt-5'\]"):
        load_suite({"name": "routerbench", "data": str(data), "train_models": ["gpt-4", "gpt-5"]})
    suite = load_suite({"name": "routerbench", "data": str(data), "train_models": ["gpt-4", "yi-34b"]})
    assert {m for e in suite.examples(0, 10) for m in e.task.metadata["offered"]} == {"gpt-4", "yi-34b"}


def test_a_repriced_teacher_keeps_its_trade_off_so_a_cheaper_gpt4_is_used_more_and_a_dearer_model_less(data_dir):
    from orchestra.envs.routerbench.data import load_rows
    from orchestra.envs.routerbench.demonstrations import fit_consult_policy

    rows = load_rows(data_dir / "routerbench")
    recorded = fit_consult_policy(rows)

    def uses(policy, model):
        return sum(model in (r.direct, r.escalate, *(r.pair or ())) for r in policy.routes.values())

    cheap_gpt4 = fit_consult_policy(rows, price_factors={"gpt-4": 0.2})
    assert {r.direct for r in cheap_gpt4.routes.values()} == {"gpt-4"}  # at a fifth of its price it is worth asking
    assert uses(recorded, "mixtral") > 0 and uses(fit_consult_policy(rows, price_factors={"mixtral": 10.0}),
                                                  "mixtral") == 0


def test_a_price_change_moves_only_the_routes_it_concerns(data_dir):
    """Each type's route trades accuracy for dollars at the rate fit at the recorded prices, so one model's price
    change can only move a route toward it (cheaper: the new route asks it) or away from it (dearer: the old route
    asked it). A dollar budget refit at the new prices fails this: claude-2 at a tenth of its price turned the arc
    route into yi-34b alone."""
    from orchestra.envs.routerbench.data import load_rows
    from orchestra.envs.routerbench.demonstrations import fit_consult_policy

    rows = load_rows(data_dir / "routerbench")
    recorded = fit_consult_policy(rows).routes

    def used(route):
        return {route.direct, route.escalate, *(route.pair or ())} - {None}

    moved = 0
    for model in sorted({m for r in rows for m in r.records}):
        for factor in (0.1, 0.3, 3.0, 5.0, 10.0):
            repriced = fit_consult_policy(rows, price_factors={model: factor}).routes
            for task_type, route in recorded.items():
                if repriced[task_type] == route:
                    continue
                moved += 1
                asks = used(repriced[task_type]) if factor < 1 else used(route)
                assert model in asks, (model, factor, task_type, route, repriced[task_type])
    assert moved >= 10  # the prices did move routes: the check above was not vacuous


def test_avoiding_a_provider_is_pricing_it_out_at_the_same_trade_off(data_dir):
    """Ruling a provider's models out and making them a thousand times dearer give the teacher the same routes: the
    rate λ is the recorded-price fit's either way, so an avoid changes the options, not the trade-off."""
    from orchestra.envs.routerbench.data import PROVIDERS, load_rows
    from orchestra.envs.routerbench.demonstrations import fit_consult_policy

    rows = load_rows(data_dir / "routerbench")
    models = sorted({m for r in rows for m in r.records})
    recorded = fit_consult_policy(rows).routes
    changed = 0
    for provider in ("anthropic", "openai", "mistral", "meta"):
        gone = [m for m in models if PROVIDERS.get(m) == provider]
        avoided = fit_consult_policy(rows, allowed=[m for m in models if m not in gone]).routes
        assert avoided == fit_consult_policy(rows, price_factors=dict.fromkeys(gone, 1000.0)).routes, provider
        changed += avoided != recorded
    assert changed >= 2  # avoiding gpt and mistral/mixtral moves routes: the comparison was not of equal policies


def test_varied_offers_draw_subsets_and_prices_keep_the_demo_preferences_and_leave_a_usable_model(env):
    mix = PreferenceMix(vary_models=True, min_models=2, multiplier_range=(0.1, 10.0))
    examples = sample_examples(env, mix, seed=5, limit=150)
    assert [e.task.metadata for e in examples] == [e.task.metadata for e in sample_examples(env, mix, 5, 150)]
    sizes = Counter(len(e.task.metadata["offered"]) for e in examples)
    assert min(sizes) >= 2 and len(sizes) > 4
    factors = [f for e in examples for f in e.task.metadata["price_factors"].values() if f != 1.0]
    assert min(factors) < 0.3 and max(factors) > 3 and all(0.1 <= f <= 10 for f in factors)
    assert {e.family for e in examples} == {"default", "avoid"} and any(e.family == "avoid" for e in examples)
    for e in examples:
        assert set(e.task.metadata["offered"]) - e.avoided, "an avoid leaves an offered model usable"
    demos = asyncio.run(collect_demonstrations(env, examples[:40]))
    for example, trajectory in demos:
        assert set(trajectory.tool_counts()) <= set(example.task.metadata["offered"]) - example.avoided
        assert trajectory.termination == "answered"
    unchanged = sample_examples(env, PreferenceMix(), seed=5, limit=150)
    assert all("offered" not in e.task.metadata for e in unchanged)


def test_a_demonstration_never_shows_a_model_with_no_recorded_answer_for_its_row(env):
    from orchestra.envs.base import Example
    from orchestra.envs.routerbench.data import Row
    from orchestra.envs.routerbench.demonstrations import fit_consult_policy
    from orchestra.envs.routerbench.env import RouterBench
    from orchestra.envs.routerbench.training import default_preference

    row = next(r for r in env.rows if r.task_type == "arc-challenge")
    route = fit_consult_policy(env.rows, max_cost_share=0.3).route(row.task_type)
    gone = {route.direct} if route.direct else {*route.pair, route.escalate}
    holed = Row(row.id, row.task_type, row.question, {m: r for m, r in row.records.items() if m not in gone})
    env2 = RouterBench([holed if r is row else r for r in env.rows], env.stats)
    [(_, trajectory)] = asyncio.run(collect_demonstrations(env2, [Example(env2.task(holed),
                                                                          default_preference())]))
    assert trajectory.termination == "answered"
    assert all(o.status == "ok" for t in trajectory.turns for o in t.observations)
    assert not set(trajectory.tool_counts()) & gone


def test_one_price_at_a_time_offers_every_model_and_changes_the_demonstration_it_should(env):
    mix = PreferenceMix(vary_prices=True, repriced_models=1, reprice_share=1.0, multiplier_range=(0.1, 10.0),
                        avoid_share=0.0)
    examples = sample_examples(env, mix, seed=3, limit=300)
    assert [e.task.metadata for e in examples] == [e.task.metadata for e in sample_examples(env, mix, 3, 300)]
    for e in examples:
        assert e.task.metadata["offered"] == env.models
        changed = {m: f for m, f in e.task.metadata["price_factors"].items() if f != 1.0}
        assert len(changed) == 1 and 0.1 <= next(iter(changed.values())) <= 10
    repriced = Counter(next(m for m, f in e.task.metadata["price_factors"].items() if f != 1.0) for e in examples)
    assert set(repriced) == set(env.models)
    # the decision follows the one price: gpt-4 far cheaper is asked for answers outright, far dearer never
    cheap = [e for e in examples if e.task.metadata["price_factors"]["gpt-4"] < 0.15]
    dear = [e for e in examples if e.task.metadata["price_factors"]["gpt-4"] > 6]
    assert cheap and dear
    calls = {e.task.id: t.tool_counts() for e, t in asyncio.run(collect_demonstrations(env, cheap + dear))}
    assert any(calls[e.task.id] == {"gpt-4": 1} for e in cheap)
    assert not any("gpt-4" in calls[e.task.id] for e in dear)
    recorded = asyncio.run(collect_demonstrations(env, sample_examples(env, PreferenceMix(avoid_share=0.0), 3, 300)))
    assert not any(t.tool_counts() == {"gpt-4": 1} for _, t in recorded)


def test_tempered_decisions_show_rare_decisions_more_often_and_keep_the_disagreement_balance(env):
    from orchestra.envs.routerbench.training import (
        balance_decisions,
        consulted_pair_disagreed,
        first_decision,
    )

    mix = PreferenceMix(vary_prices=True, repriced_models=1, reprice_share=1.0, multiplier_range=(0.1, 10.0))
    demos = asyncio.run(collect_demonstrations(env, sample_examples(env, mix, seed=2, limit=200)))
    counts = Counter(first_decision(t) for _, t in demos)
    assert len(counts) >= 4 and max(counts.values()) > 5 * min(counts.values())  # the stress: skewed decisions
    as_sampled = Counter(first_decision(t) for _, t in balance_decisions(demos, None, 300, 0, 1.0))
    assert sum(as_sampled.values()) == 300
    flat = Counter(first_decision(t) for _, t in balance_decisions(demos, None, 300, 0, 0.0))
    assert set(flat) == set(counts)
    assert max(flat.values()) - min(flat.values()) <= 2  # every decision equally often
    rare = min(counts, key=counts.get)
    assert flat[rare] > as_sampled[rare]
    assert abs(as_sampled[max(counts, key=counts.get)] / 300 - max(counts.values()) / len(demos)) < 0.02
    tempered = balance_decisions(demos, 0.5, 300, 0, 0.5)
    assert tempered == balance_decisions(demos, 0.5, 300, 0, 0.5)  # seeded
    consult = [consulted_pair_disagreed(t) for _, t in tempered if consulted_pair_disagreed(t) is not None]
    assert consult and abs(sum(consult) / len(consult) - 0.5) < 0.1


def test_tempering_per_instruction_shows_an_instruction_that_changes_nothing_as_often_as_one_that_does(env):
    from orchestra.envs.routerbench.training import balance_decisions, first_decision

    demos = asyncio.run(collect_demonstrations(env, sample_examples(env, PreferenceMix(avoid_share=0.6), 4, 300)))

    def said(items):
        return Counter((e.preferences.instruction, first_decision(t)) for e, t in items)

    counts = said(demos)
    claude = [k for k in counts if k[0] == "Avoid claude models."]
    unchanged = [k for k in claude if (("", k[1]) in counts)]  # avoiding claude leaves these decisions as usual
    assert unchanged  # the stress: a decision shared by the default and by an instruction that changes nothing
    usual = max(unchanged, key=counts.get)
    by_decision = said(balance_decisions(demos, None, 300, 0, 0.0))
    by_instruction = said(balance_decisions(demos, None, 300, 0, 0.0, per_instruction=True))
    assert set(by_instruction) == set(counts)
    assert max(by_instruction.values()) - min(by_instruction.values()) <= 2  # every pair equally often
    # Per decision, the shared decision's share is split by how often each instruction was sampled with it.
    assert by_instruction[usual] > by_decision[usual]
    assert balance_decisions(demos, None, 300, 0, 0.5) == balance_decisions(demos, None, 300, 0, 0.5,
                                                                            per_instruction=False)


def test_rebalancing_a_decision_with_one_kind_of_consult_still_draws_every_demonstration(env):
    from orchestra.envs.routerbench.training import consulted_pair_disagreed, rebalance

    demos = asyncio.run(collect_demonstrations(env, sample_examples(env, PreferenceMix(), seed=0, limit=80)))
    disagreeing = [d for d in demos if consulted_pair_disagreed(d[1]) is True]
    agreeing = [d for d in demos if consulted_pair_disagreed(d[1]) is False]
    assert disagreeing and agreeing  # the stress: each kind alone
    for kind in (disagreeing, agreeing):
        picked = rebalance(kind, 0.5, 12, 0)
        assert len(picked) == 12 and all(d in kind for d in picked)


def test_decision_temper_out_of_range_names_the_field(data_dir):
    from orchestra.envs.registry import load_suite

    with pytest.raises(Exception, match="decision_temper"):
        load_suite({"name": "routerbench", "data": str(data_dir / "routerbench"), "decision_temper": 2})
