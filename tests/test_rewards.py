"""Rewards: features, the group-normalized preference reward, the appendix metric, the rollout filter.

Hand-worked tables first, then hypothesis properties of the normalization.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.preferences import Preferences
from orchestra.rewards import (
    Features,
    features,
    group_rewards,
    is_valid_rollout,
    normalize_group,
    outcome_reward,
    preference_following_benchmark,
    preference_following_score,
    preference_rewards,
    score_group,
)
from orchestra.types import Completion, Observation, Outcome, Termination, Trajectory, Turn


def _turn(index: int, orchestrator_cost_usd: float, *observations: Observation) -> Turn:
    return Turn(index, Completion(text="", cost_usd=orchestrator_cost_usd), tuple(observations))


def _obs(name: str, cost_usd: float = 0.0, latency_s: float = 0.0, **kwargs) -> Observation:
    return Observation(call_id=f"c-{name}", name=name, content="x", cost_usd=cost_usd, latency_s=latency_s, **kwargs)


def _trajectory(*turns: Turn, termination=Termination.ANSWERED, answer: str | None = "42") -> Trajectory:
    return Trajectory(task_id="t", messages=(), turns=turns, termination=termination, final_answer=answer)


# ---- features -------------------------------------------------------------------------------------------------

def test_features_count_cost_and_latency_including_the_answer_call():
    traj = _trajectory(
        _turn(0, 0.001, _obs("search", 0.01, 2.0), _obs("search", 0.01, 3.0), _obs("bad", status="format_error")),
        _turn(1, 0.002, _obs("gpt-5", 0.05, 7.0)),
        _turn(2, 0.003, _obs("answer", 0.02, 4.0, terminal=True)),
    )
    f = features(traj, Outcome(solved=True), ["search", "gpt-5", "python", "answer"])
    assert f.tool_counts == (2, 1, 0, 1)  # python never called: 0; the malformed call is not tool use
    # orchestrator 0.006 + tools 0.01 + 0.01 + 0.05 + the final answer call 0.02
    assert f.cost_usd == pytest.approx(0.096)
    # per turn the slowest concurrent call: 3 + 7 + 4 (answer included)
    assert f.latency_s == pytest.approx(14.0)
    assert f.vector() == pytest.approx((2.0, 1.0, 0.0, 1.0, 1.0, -0.096, -14.0))
    assert features(traj, Outcome(solved=False), ["search"]).vector()[1] == 0.0


def test_features_reject_negative_amounts():
    with pytest.raises(ValueError):
        Features(("a",), (1,), True, -0.1, 0.0)
    with pytest.raises(ValueError):
        Features(("a", "b"), (1,), True, 0.1, 0.0)


# ---- the group reward, by hand --------------------------------------------------------------------------------

TOOLS = ("search", "gpt-5", "python")
P = Preferences(tool_weights={"search": 1.0}, outcome=1.0, cost=1.0, latency=0.0)

#   rollout | search gpt-5 python | solved | cost $ | latency s
#   A       |   2      0     1    |  yes   |  0.05  |   3
#   B       |   0      1     0    |  yes   |  0.25  |  10
#   C       |   1      0     0    |  no    |  0.02  |   1
#   D       |   1      1     0    |  yes   |  0.10  |   5
# normalized (min-max over all four; zero counts included):
#   search 2,0,1,1 -> 1, 0, .5, .5      outcome 1,1,0,1 -> 1,1,0,1
#   -cost -.05,-.25,-.02,-.10 -> 20/23, 0, 1, 15/23
# P = [1, 0, 0, 1, 1, 0]:  A = 1 + 1 + 20/23,  B = 0 + 1 + 0,  C = 0 (unsolved),  D = .5 + 1 + 15/23
GROUP = [
    Features(TOOLS, (2, 0, 1), True, 0.05, 3.0),
    Features(TOOLS, (0, 1, 0), True, 0.25, 10.0),
    Features(TOOLS, (1, 0, 0), False, 0.02, 1.0),
    Features(TOOLS, (1, 1, 0), True, 0.10, 5.0),
]


def test_group_rewards_hand_worked_table():
    rewards = group_rewards(GROUP, P)
    assert rewards == pytest.approx([2 + 20 / 23, 1.0, 0.0, 1.5 + 15 / 23])


def test_zero_counts_take_part_in_min_max():
    # The release left zeros out of the min/max: search would then range over 1..2 and D would get 0, not .5.
    normalized = normalize_group([f.vector() for f in GROUP])
    assert [row[0] for row in normalized] == [1.0, 0.0, 0.5, 0.5]


def test_latency_preference_by_hand():
    prefs = Preferences(outcome=0.0, cost=0.0, latency=1.0)
    # -latency -3, -10, -1, -5 -> 7/9, 0, 1, 5/9 ; C unsolved
    assert group_rewards(GROUP, prefs) == pytest.approx([7 / 9, 0.0, 0.0, 5 / 9])


def test_no_constant_offset_and_ties_give_zero():
    same = [Features(TOOLS, (1, 0, 0), True, 0.1, 2.0)] * 3
    assert group_rewards(same, P) == [0.0, 0.0, 0.0]
    assert group_rewards(same[:1], P) == [0.0]  # a group of one: every component constant
    assert group_rewards([], P) == []


def test_rounding_noise_is_a_tie():
    a = Features(("s",), (1,), True, 0.1 + 0.2, 1.0)
    b = Features(("s",), (1,), True, 0.3, 1.0)
    assert a.cost_usd != b.cost_usd
    assert group_rewards([a, b], Preferences(cost=1.0)) == [0.0, 0.0]


def test_group_rewards_from_trajectories():
    cheap = _trajectory(_turn(0, 0.0, _obs("answer", 0.01, 1.0, terminal=True)))
    dear = _trajectory(_turn(0, 0.0, _obs("gpt-5", 0.5, 5.0)), _turn(1, 0.0, _obs("answer", 0.01, 1.0, terminal=True)))
    wrong = _trajectory(_turn(0, 0.0, _obs("answer", 0.0, 0.5, terminal=True)))
    outcomes = [Outcome(True), Outcome(True), Outcome(False)]
    rewards = preference_rewards([cheap, dear, wrong], outcomes, Preferences(outcome=1.0, cost=1.0), ["gpt-5"])
    # -cost: -.01, -.51, 0 -> (.50/.51), 0, 1 ; outcome 1, 1, 0
    assert rewards == pytest.approx([1 + 0.50 / 0.51, 1.0, 0.0])


def test_mismatched_tool_names_are_rejected():
    with pytest.raises(ValueError):
        group_rewards([GROUP[0], Features(("x", "y", "z"), (0, 0, 0), True, 0.0, 0.0)], P)


def test_score_group_flags_invalid_rollouts_and_keeps_breakdown():
    good = _trajectory(_turn(0, 0.0, _obs("answer", 0.01, 1.0, terminal=True)))
    malformed = _trajectory(
        _turn(0, 0.0, _obs("search", status="format_error")), _turn(1, 0.0, _obs("answer", 0.01, 1.0, terminal=True))
    )
    out_of_turns = _trajectory(_turn(0, 0.0, _obs("search", 0.01, 1.0)), termination=Termination.MAX_TURNS,
                               answer=None)
    scored = score_group([good, malformed, out_of_turns], [Outcome(True)] * 2 + [Outcome(False)],
                         Preferences(), ["search"])
    assert [s.valid for s in scored] == [True, False, False]
    assert scored[0].weights == (0.0, 1.0, 0.0, 0.0)
    assert scored[0].normalized[1] == 1.0 and scored[2].normalized[1] == 0.0
    assert [s.reward for s in scored] == [1.0, 1.0, 0.0]


def test_rollout_filter_and_outcome_reward():
    answered = _trajectory(_turn(0, 0.0, _obs("answer", terminal=True)))
    assert is_valid_rollout(answered)
    assert not is_valid_rollout(replace(answered, final_answer="  "))
    assert not is_valid_rollout(replace(answered, termination=Termination.BUDGET))
    assert is_valid_rollout(replace(answered, termination=Termination.FINAL_MESSAGE))
    assert outcome_reward(Outcome(True)) == 1.0 and outcome_reward(Outcome(False, score=0.9)) == 0.0


# ---- the appendix metric --------------------------------------------------------------------------------------

def test_preference_following_score_by_hand():
    prefs = Preferences(tool_weights={"search": 1.0, "gpt-5": 0.5}, outcome=1.0, cost=1.0, latency=0.5)
    run = Features(("search", "gpt-5"), (2, 1), True, 0.05, 4.0)
    base = Features(("search", "gpt-5"), (0, 2), True, 0.20, 8.0)
    # search 2/max(1,0)=2, gpt-5 1/2, outcome 1, cost 20c/max(1,5c)=4, latency 8/max(1,4)=2
    assert preference_following_score(run, base, prefs) == pytest.approx(2 + 0.25 + 1 + 4 + 1)
    # in dollars the guard swallows the run's own cost: 0.20 / max(1, 0.05) = 0.2
    assert preference_following_score(run, base, prefs, cost_unit_usd=1.0) == pytest.approx(2 + 0.25 + 1 + 0.2 + 1)
    assert preference_following_score(replace(run, solved=False), base, prefs) == 0.0
    total = preference_following_benchmark([run, replace(run, solved=False)], [base, base], [prefs, prefs])
    assert total == pytest.approx(8.25)


# ---- properties -----------------------------------------------------------------------------------------------

@st.composite
def groups(draw):
    n_tools = draw(st.integers(0, 3))
    names = tuple(f"t{i}" for i in range(n_tools))
    size = draw(st.integers(1, 8))
    group = [
        Features(
            names,
            tuple(draw(st.integers(0, 5)) for _ in names),
            draw(st.booleans()),
            draw(st.integers(0, 10**6)) / 1000,  # $0 .. $1000 in tenths of a cent
            draw(st.integers(0, 10**5)) / 100,
        )
        for _ in range(size)
    ]
    unit = st.floats(0.0, 1.0)
    prefs = Preferences(tool_weights={n: draw(unit) for n in names}, outcome=draw(unit), cost=draw(unit),
                        latency=draw(unit))
    return group, prefs


SCALE = st.floats(1e-3, 1e3)


@settings(max_examples=200, deadline=None)
@given(groups(), SCALE)
def test_rescaling_costs_changes_nothing(case, scale):
    group, prefs = case
    scaled = [replace(f, cost_usd=f.cost_usd * scale) for f in group]
    assert group_rewards(scaled, prefs) == pytest.approx(group_rewards(group, prefs), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(groups(), SCALE)
def test_rescaling_latencies_changes_nothing(case, scale):
    group, prefs = case
    scaled = [replace(f, latency_s=f.latency_s * scale) for f in group]
    assert group_rewards(scaled, prefs) == pytest.approx(group_rewards(group, prefs), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(groups(), st.data())
def test_permuting_the_group_permutes_the_rewards(case, data):
    group, prefs = case
    order = data.draw(st.permutations(range(len(group))))
    rewards = group_rewards(group, prefs)
    assert group_rewards([group[i] for i in order], prefs) == [rewards[i] for i in order]


@settings(max_examples=200, deadline=None)
@given(groups())
def test_unsolved_gets_zero_and_rewards_stay_in_range(case):
    group, prefs = case
    top = sum(prefs.vector(group[0].tool_names))
    for f, r in zip(group, group_rewards(group, prefs), strict=True):
        if not f.solved:
            assert r == 0.0
        assert 0.0 <= r <= top + 1e-12


@settings(max_examples=200, deadline=None)
@given(groups(), st.integers(0, 10**6))
def test_a_constant_component_contributes_nothing(case, cost_millis):
    group, prefs = case
    flat = [replace(f, cost_usd=cost_millis / 1000) for f in group]
    assert group_rewards(flat, prefs) == group_rewards(flat, replace(prefs, cost=0.0))


@settings(max_examples=100, deadline=None)
@given(groups())
def test_normalized_values_are_in_unit_interval(case):
    group, _ = case
    for row in normalize_group([f.vector() for f in group]):
        assert all(0.0 <= x <= 1.0 and not math.isnan(x) for x in row)
