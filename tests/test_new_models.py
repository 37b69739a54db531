"""Models introduced as new: left out of the price list, introduced in the request beside a model they resemble,
and in training called by made-up names, so that a student learns to call a model by its introduction."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from orchestra import ScriptedBackend, Toolbox, run_episode
from orchestra.answers import extract_choice
from orchestra.envs.registry import load_suite
from orchestra.envs.routerbench.config import PreferenceMix
from orchestra.envs.routerbench.prompt import compact_prompt
from orchestra.envs.routerbench.training import avoid_preference, first_decision, sample_examples
from orchestra.errors import ConfigError
from tests.envs import model_call as call
from tests.envs import routerbench_env, routerbench_head


@pytest.fixture(scope="module")
def env(data_dir, tmp_path_factory):
    return routerbench_env(routerbench_head(data_dir, tmp_path_factory.mktemp("routerbench"), 80))


async def test_a_new_model_is_introduced_beside_the_closest_listed_model_and_answers_to_its_alias_alone(env):
    def letters(t):
        records = env.row(t.id).records
        return all(m in records and extract_choice(records[m].response) for m in ("yi-34b", "mixtral", "gpt-4"))

    task = next(t for t in env.tasks() if t.metadata["task_type"] != "mbpp" and letters(t))
    row = env.row(task.id)
    offered = env.offer(task, ["yi-34b", "mixtral", "gpt-4"], {"mixtral": 2.0})
    introduced = env.introduce(offered, ["yi-34b"], {"ночь-13b": "yi-34b"})
    system, user = (m.content for m in compact_prompt(introduced, [], None))
    assert "yi-34b" not in system and "ночь-13b" not in system and "mixtral" in system
    kind = task.metadata["task_type"]
    accuracy = {m: round(100 * env.stats.accuracy[m][kind]) for m in ("yi-34b", "mixtral", "gpt-4")}
    like = min(("mixtral", "gpt-4"), key=lambda m: abs(accuracy[m] - accuracy["yi-34b"]))
    ratio = env.stats.mean_cost_usd["yi-34b"] / (env.stats.mean_cost_usd[like] * (2.0 if like == "mixtral" else 1.0))
    assert user.endswith(f"\nNew models: ночь-13b like {like} ({accuracy['yi-34b']}% vs {accuracy[like]}%), "
                         f"{ratio:.2g}x its price.")

    instance = env.start(introduced)
    tr = await run_episode(introduced, ScriptedBackend([
        call("ask", "yi-34b") + call("ask", "ночь-13b") + call("ask", "mixtral"), call("answer", "ночь-13b")]),
        Toolbox.of(instance.tools))
    hidden, asked, other = tr.turns[0].observations
    assert hidden.status == "tool_error" and "unknown model 'yi-34b'" in hidden.content
    assert asked.status == "ok" and asked.target == "yi-34b"  # accounting and grading know the model itself
    assert "ночь-13b" in other.content and "yi-34b" not in other.content  # the comparison names what was called
    assert tr.cost_usd == pytest.approx(row.records["yi-34b"].cost_usd + 2.0 * row.records["mixtral"].cost_usd)
    assert (await instance.grade(tr)).solved == row.records["yi-34b"].correct
    assert instance.consulted[1:] == [("yi-34b", asked.content[:1]), ("mixtral", other.content[:1])]

    with pytest.raises(ConfigError, match="not offered"):
        env.introduce(offered, ["claude-2"])
    with pytest.raises(ConfigError, match="names of models"):
        env.introduce(offered, ["yi-34b"], {"gpt-4": "yi-34b"})
    with pytest.raises(ConfigError, match="at least one must be listed"):
        env.introduce(offered, ["yi-34b", "mixtral", "gpt-4"])


def test_new_models_at_evaluation_need_a_checkpoint_trained_to_read_introductions(data_dir, tmp_path):
    from orchestra.evaluate.spec import _trained_prompt

    folder = routerbench_head(data_dir, tmp_path, 60)
    suite = load_suite({"name": "routerbench", "data": str(folder), "new_models": ["yi-34b", "codellama-34b"]})
    for task in suite.tasks:
        assert task.metadata["aliases"] == {"new1": "yi-34b", "new2": "codellama-34b"}
        assert set(task.metadata["new_models"]) == {"new1", "new2"} and "yi-34b" not in task.metadata["prices_per_1k"]
    assert suite.prompt_name == "routerbench/compact+new" and suite.identity["new_models"] == ["codellama-34b", "yi-34b"]
    trained = load_suite({"name": "routerbench", "data": str(folder), "preferences": {"new_model_share": 0.5}})
    assert trained.prompt_name == "routerbench/compact+new"
    plain = load_suite({"name": "routerbench", "data": str(folder)})
    assert "new_models" not in plain.identity and "New models" not in compact_prompt(plain.tasks[0], [], None)[1].content
    with pytest.raises(ConfigError, match="trained with prompt 'routerbench/compact\\+new'"):
        _trained_prompt(suite.prompt_name, plain, tmp_path)
    with pytest.raises(ConfigError, match="new_models: unknown models \\['gpt-5'\\]"):
        load_suite({"name": "routerbench", "data": str(folder), "new_models": ["gpt-5"]})


def test_training_introduces_offered_models_under_handles_and_the_teacher_calls_them_so(env):
    mix = PreferenceMix(new_model_share=1.0, avoid_share=0.5)
    examples = sample_examples(env, mix, seed=2, limit=48)
    assert [e.task.metadata for e in examples] == [e.task.metadata for e in sample_examples(env, mix, 2, 48)]
    sizes = {len(e.task.metadata["new_models"]) for e in examples}
    assert sizes == {1, 2, 3}
    for e in examples:
        aliases = e.task.metadata["aliases"]
        assert set(aliases) == set(e.task.metadata["new_models"]) == {f"new{i}" for i in range(1, len(aliases) + 1)}
        assert not set(aliases.values()) & e.avoided  # an avoided model is never disguised
    behind_new1 = Counter(e.task.metadata["aliases"]["new1"] for e in examples)
    assert len(behind_new1) >= 6 and max(behind_new1.values()) < 24  # a handle names no model in particular
    assert any(e.avoided for e in examples)

    demos = asyncio.run(env_demonstrations(env, examples))
    called_new = 0
    for example, trajectory in demos:
        aliases = example.task.metadata["aliases"]
        names = {str(c.arguments["model"]) for t in trajectory.turns for c in t.completion.tool_calls}
        assert not names & set(aliases.values()), "a disguised model is called by its made-up name only"
        assert trajectory.termination == "answered" and trajectory.format_errors == 0
        decision = {model for _, model in first_decision(trajectory, example.task.metadata["new_models"])}
        first = {str(c.arguments["model"]) for c in trajectory.turns[0].completion.tool_calls}
        assert not decision & set(aliases) and ("new" in decision) == bool(first & set(aliases))
        called_new += bool(names & set(aliases))
    assert called_new >= 5  # the teacher does call introduced models

    plain = sample_examples(env, PreferenceMix(avoid_share=0.5), seed=2, limit=48)
    assert not any("new_models" in e.task.metadata for e in plain)
    assert [e.preferences for e in plain] == [e.preferences for e in examples]  # the same preference draws


async def env_demonstrations(env, examples):
    from orchestra.envs.routerbench.training import collect_demonstrations

    return await collect_demonstrations(env, examples)


def test_introduced_models_can_come_at_new_prices_which_their_introduction_and_their_cost_carry(env):
    mix = PreferenceMix(new_model_share=1.0, new_model_prices=(0.1, 10.0))
    examples = sample_examples(env, mix, seed=4, limit=24)
    factors = []
    for e in examples:
        meta = e.task.metadata
        for handle, real in meta["aliases"].items():
            factor = meta["price_factors"][real]
            like, _, _, ratio = meta["new_models"][handle]
            expected = env.stats.mean_cost_usd[real] * factor / (
                env.stats.mean_cost_usd[like] * meta["price_factors"].get(like, 1.0))
            assert ratio == pytest.approx(expected)
            factors.append(factor)
        assert all(meta["price_factors"].get(m, 1.0) == 1.0 for m in meta["prices_per_1k"])  # listed: as recorded
    assert min(factors) < 0.3 and max(factors) > 3 and all(0.1 <= f <= 10 for f in factors)
    with pytest.raises(ValueError, match="new_model_prices"):
        PreferenceMix(new_model_prices=(0.0, 2.0))


def test_an_avoid_preference_over_disguised_models_still_rules_out_the_provider(env):
    mix = PreferenceMix(new_model_share=1.0, avoid_share=1.0, avoid_providers=["anthropic"])
    for example in sample_examples(env, mix, seed=0, limit=12):
        expected = avoid_preference("anthropic", env.models)[1]
        assert example.avoided == expected
        assert not set(example.task.metadata["aliases"].values()) & expected


def test_the_teacher_plans_an_introduced_model_from_its_introduction_alone(env):
    from orchestra.envs.routerbench.demonstrations import fit_consult_policy

    def routes(real, like, ratio):
        """Per task type, the route with `real` introduced as new1 "like `like` at `ratio`x its price"."""
        others = [m for m in env.models if m not in ("yi-34b", "mistral-7b") or m == real]
        policy = fit_consult_policy(env.rows, allowed=others, stand_ins={real: (like, ratio)})
        name = {real: "new1"}
        return {t: (name.get(r.direct, r.direct), tuple(name.get(m, m) for m in r.pair or ()),
                    name.get(r.escalate, r.escalate)) for t, r in policy.routes.items()}

    # yi-34b and mistral-7b differ by 30 points on arc; introduced alike, they are demonstrated alike
    for like, ratio in (("claude-1", 0.1), ("gpt-4", 0.01), ("mixtral", 0.5), ("mistral-7b", 1.0)):
        assert routes("yi-34b", like, ratio) == routes("mistral-7b", like, ratio), (like, ratio)
    cheap_gpt4 = routes("mistral-7b", "gpt-4", 0.01)  # what the request says: gpt-4's answers at 1% of its price
    assert all(route[0] == "new1" for t, route in cheap_gpt4.items() if t != "mbpp"), cheap_gpt4
    unpromising = routes("yi-34b", "mistral-7b", 1.0)
    assert not any("new1" in (route[0], *route[1], route[2]) for route in unpromising.values()), unpromising
