"""Training sequences from real RouterBench episodes: token-exact rollouts (train/rollout.py) and the SFT encoding
(train/data.py) are what the model reads and writes at inference.

A tiny random Qwen3 is forced (a logit bias) to emit scripted ids, so multi-turn episodes with tool calls happen on
the real episode loop, replay environment and `LocalBackend`; some scripts are deliberately a non-canonical split of
their text, which only an implementation that never re-tokenizes sampled text gets right.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from orchestra.backends.local import LocalBackend
from orchestra.backends.scripted import ScriptedBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.envs.routerbench.config import PreferenceMix
from orchestra.envs.routerbench.env import RouterBench
from orchestra.envs.routerbench.training import (
    DEMO_SETTINGS,
    collect_demonstrations,
    default_preference,
    sample_examples,
)
from orchestra.rollout.batch import run_task
from orchestra.toolcalls import render_hermes
from orchestra.train.data import encode_conversation
from orchestra.train.rollout import collect_groups, to_sequence
from orchestra.types import Termination
from tests.envs import routerbench_env
from tests.forced_model import ForcedLM

CHEAP, WRONG = "mistral-7b", "llama-70b"


@pytest.fixture(scope="module")
def env(data_dir) -> RouterBench:
    return routerbench_env(data_dir / "routerbench", dev_fraction=0.2, part="train")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def rows(env):
    """Rows where the cheap model is right and the other one wrong (both available)."""
    picked = [r for r in env.rows if CHEAP in r.records and WRONG in r.records
              and r.records[CHEAP].correct and not r.records[WRONG].correct]
    assert len(picked) >= 2
    return picked


def forced_backend(tok, scripts: list[list[int]], calls: str = "hermes") -> LocalBackend:
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    return LocalBackend(ForcedLM(tiny_model(tok, seed=0), scripts, end_id), tok, name="tiny", render_tools=False,
                        seed=0, calls=calls)


def noncanonical_ids(tok, text: str) -> list[int]:
    """The canonical ids of `text` with every multi-character token spelled out one character per id: a legal
    split of the same text that the tokenizer would never produce."""
    ids = []
    for token in canonical_ids(tok, text):
        piece = tok.decode([token])
        split = [tok.encode(ch, add_special_tokens=False) for ch in piece]
        ids += [x[0] for x in split] if len(piece) > 1 and piece.isalpha() and all(len(x) == 1 for x in split) \
            else [token]
    return ids


def canonical_ids(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


@pytest.fixture(scope="module")
def two_turns(env, tok, rows):
    """Turn 1 asks two models at once (non-canonical ids), turn 2 answers with the cheap one (canonical ids)."""
    asks = "\n".join(render_hermes("ask", {"model": m}) for m in (CHEAP, WRONG))
    scripts = [noncanonical_ids(tok, asks), canonical_ids(tok, render_hermes("answer", {"model": CHEAP}))]
    backend = forced_backend(tok, scripts)
    result = asyncio.run(run_task(env, env.task(rows[0]), backend, DEMO_SETTINGS, preferences=default_preference()))
    return result, scripts


def test_to_sequence_is_exactly_what_the_model_read_and_sampled(tok, two_turns):
    result, scripts = two_turns
    turns = result.trajectory.turns
    assert len(turns) == 2 and len(turns[0].completion.tool_calls) == 2 and len(turns[0].observations) == 2
    assert result.trajectory.termination == Termination.ANSWERED and result.outcome.solved
    first, last = turns[0].completion, turns[-1].completion
    # the forced script really is not how the tokenizer would split that text
    assert list(first.completion_ids[:-1]) == scripts[0] != canonical_ids(tok, tok.decode(scripts[0]))

    seq = to_sequence(result)
    assert seq.prompt_ids == first.prompt_ids
    assert seq.prompt_ids + seq.completion_ids == last.prompt_ids + last.completion_ids  # the final context
    expected_mask = [0] * len(seq.completion_ids)
    for turn in turns:
        start = len(turn.completion.prompt_ids) - len(seq.prompt_ids)
        expected_mask[start : start + len(turn.completion.completion_ids)] = [1] * len(turn.completion.completion_ids)
    assert list(seq.env_mask) == expected_mask
    sampled = [i for t in turns for i in t.completion.completion_ids]
    assert [i for i, m in zip(seq.completion_ids, seq.env_mask, strict=True) if m] == sampled
    assert 0 < seq.env_mask.count(0) < len(seq.env_mask)  # the tool results between the turns are not trained on
    assert len(seq.logprobs) == len(seq.completion_ids)
    assert [lp for lp, m in zip(seq.logprobs, seq.env_mask, strict=True) if m] == [
        lp for t in turns for lp in t.completion.logprobs]
    assert all(lp == 0.0 for lp, m in zip(seq.logprobs, seq.env_mask, strict=True) if not m)


def test_to_sequence_refuses_prompts_that_do_not_extend_the_previous_turn(env, tok, rows, two_turns):
    result, _ = two_turns
    trajectory = result.trajectory
    second = trajectory.turns[1]
    # What a backend that re-tokenized the conversation would have fed the model on turn 2.
    backend = forced_backend(tok, [[]])
    retokenized = backend.prompt_ids(trajectory.messages[: _assistant_index(trajectory, 1)], [])
    assert retokenized != second.completion.prompt_ids
    broken_turn = dataclasses.replace(second, completion=dataclasses.replace(second.completion,
                                                                             prompt_ids=retokenized))
    broken = dataclasses.replace(result, trajectory=dataclasses.replace(
        trajectory, turns=(trajectory.turns[0], broken_turn)))
    with pytest.raises(ValueError, match="does not extend"):
        to_sequence(broken)

    scripted = asyncio.run(run_task(env, env.task(rows[0]), ScriptedBackend([render_hermes("answer", {"model": CHEAP})]),
                                    DEMO_SETTINGS))
    with pytest.raises(ValueError, match="no token ids"):
        to_sequence(scripted)


def _assistant_index(trajectory, n: int) -> int:
    """Index in `messages` of the n-th assistant message."""
    return [i for i, m in enumerate(trajectory.messages) if m.role == "assistant"][n]


def test_collect_groups_drops_format_errors_and_groups_without_spread(env, rows):
    right, wrong = (render_hermes("answer", {"model": m}) for m in (CHEAP, WRONG))
    malformed = '<tool_call>\n{"name": "answer", "arguments": {"model": \n</tool_call>'
    # concurrency=1: episodes run one after the other, so the replies below are consumed in this order.
    replies = [right, wrong, malformed, right, right,  # task A: right, wrong, malformed-then-right, right
               right, right, right, right]  # task B: all right (no spread)
    backend = ScriptedBackend(replies)
    tasks = [env.task(rows[0]), env.task(rows[1])]
    prefs = [default_preference(), default_preference()]
    groups = asyncio.run(collect_groups(env, tasks, prefs, backend, DEMO_SETTINGS, group_size=4,
                                        tool_names=list(env.models), min_group_std=0.1, concurrency=1))
    a, b = groups
    assert [r.outcome.solved for r in a.results] == [True, False, True, True]
    assert a.results[2].trajectory.format_errors == 1
    assert a.rewards[0] is not None and a.rewards[0] > 0 and a.rewards[3] == a.rewards[0]
    assert a.rewards[1] == 0.0  # valid but wrong: kept, with no reward
    assert a.rewards[2] is None  # a format error: out, although its final answer was right
    assert len(a.raw_rewards) == 4 and a.raw_rewards[2] > 0  # the paper's reward is still logged
    assert b.rewards == [None] * 4 and len(set(b.raw_rewards)) == 1  # std 0 < 0.1: the whole group is dropped

    strict = asyncio.run(collect_groups(env, tasks[:1], prefs[:1], ScriptedBackend(replies[:5]), DEMO_SETTINGS,
                                        group_size=4, tool_names=list(env.models), min_group_std=10.0,
                                        concurrency=1))
    assert strict[0].rewards == [None] * 4  # std above 0 but below the threshold: dropped too


@pytest.fixture(scope="module")
def demonstrations(env):
    examples = sample_examples(env, PreferenceMix(), seed=0, limit=12)
    demos = asyncio.run(collect_demonstrations(env, examples))
    assert any(sum(m.role == "assistant" for m in t.messages) >= 2 for _, t in demos)  # consult episodes
    assert any(e.preferences.instruction for e, _ in demos)  # and "avoid" instructions
    return demos


@pytest.mark.parametrize("calls", ["hermes", "compact"])
def test_sft_encoding_is_the_inference_format(env, tok, demonstrations, calls):
    """Each prefix of an encoded demonstration ending before an assistant turn is exactly what `LocalBackend` feeds
    the model for that conversation (with the tools the episode had), and the reply tokens follow it, trained on,
    in the call dialect the backend writes."""
    backend = LocalBackend(tiny_model(tok, seed=0), tok, name="tiny", render_tools=False, calls=calls)
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    checked = 0
    for example, trajectory in demonstrations:
        encoded = encode_conversation(backend, trajectory.messages, [])
        assert len(encoded.ids) == len(encoded.mask)
        specs = [t.spec for t in env.start(example.task).tools]
        assistant = [i for i, m in enumerate(trajectory.messages) if m.role == "assistant"]
        previous_end = 0
        for i in assistant:
            fresh = LocalBackend(backend.lm, tok, name="tiny", render_tools=False, calls=calls)  # no prefix cache
            prompt = fresh.prompt_ids(trajectory.messages[:i], specs)
            assert encoded.ids[: len(prompt)] == prompt
            assert not any(encoded.mask[previous_end : len(prompt)])  # prompts and tool results: not trained on
            reply = canonical_ids(tok, _reply_text(trajectory.messages[i], calls)) + [end_id]
            assert encoded.ids[len(prompt) : len(prompt) + len(reply)] == tuple(reply)
            assert all(encoded.mask[len(prompt) : len(prompt) + len(reply)])
            previous_end = len(prompt) + len(reply)
            checked += 1
        assert previous_end == len(encoded.ids)
    assert checked > len(demonstrations)  # multi-turn demonstrations were among them


def _reply_text(message, calls: str = "hermes") -> str:
    """The assistant text of a demonstration (the policy writes only tool calls), spelled out by hand."""
    assert not message.content
    if calls == "compact":
        return "\n".join(f"{c.name}(" + ", ".join(f"{k}={v}" for k, v in c.arguments.items()) + ")"
                         for c in message.tool_calls)
    return "\n".join(render_hermes(c.name, c.arguments) for c in message.tool_calls)


@pytest.mark.parametrize("calls", ["hermes", "compact"])
def test_a_replayed_demonstration_gives_the_same_ids_and_mask_as_its_sft_encoding(env, tok, demonstrations, calls):
    """Forcing the model to write a demonstration's replies through the real episode loop yields the rollout
    sequence whose ids and env mask equal the SFT encoding: SFT and RL train on one format, in either dialect."""
    example, trajectory = next((e, t) for e, t in demonstrations if len(t.turns) == 2)
    replies = [m for m in trajectory.messages if m.role == "assistant"]
    backend = forced_backend(tok, [canonical_ids(tok, _reply_text(m, calls)) for m in replies], calls)
    encoded = encode_conversation(backend, trajectory.messages, [])
    result = asyncio.run(run_task(env, example.task, backend, DEMO_SETTINGS, preferences=example.preferences))
    assert [(c.name, c.arguments) for c in result.trajectory.calls] == [
        (c.name, c.arguments) for c in trajectory.calls]
    assert [o.content for o in result.trajectory.observations] == [o.content for o in trajectory.observations]
    seq = to_sequence(result)
    assert seq.prompt_ids + seq.completion_ids == encoded.ids
    assert (0,) * len(seq.prompt_ids) + seq.env_mask == encoded.mask


def test_noncanonical_ids_spell_the_same_text_differently(tok):
    text = render_hermes("ask", {"model": CHEAP})
    assert tok.decode(noncanonical_ids(tok, text)) == text
    assert len(noncanonical_ids(tok, text)) > len(canonical_ids(tok, text))


def test_decision_weights_fall_exactly_on_each_calls_name_and_argument_values(env, tok, demonstrations):
    """With decision_weight, the tokens spelling a call's name and argument values (and only those, among the
    written tokens) carry the weight; ids and mask are unchanged; prompts and tool results still weigh 0."""
    from orchestra.train.data import decision_spans
    from orchestra.types import Message, ToolCall

    message = Message("assistant", "Let me check.", tool_calls=(
        ToolCall("c0", "ask", {"model": "mixtral"}), ToolCall("c1", "answer", {"model": "gpt-4", "note": [1, "é"]})))
    text = "Let me check.\n" + "\n".join(render_hermes(c.name, c.arguments) for c in message.tool_calls)
    assert [text[a:b] for a, b in decision_spans(message)] == [
        '"ask"', '"mixtral"', '"answer"', '"gpt-4"', '[1, "é"]']

    backend = LocalBackend(tiny_model(tok, seed=0), tok, name="tiny", render_tools=False)
    weighted_any = False
    for _, trajectory in demonstrations:
        plain = encode_conversation(backend, trajectory.messages, [])
        weighted = encode_conversation(backend, trajectory.messages, [], decision_weight=5.0)
        assert plain.weights is None and (weighted.ids, weighted.mask) == (plain.ids, plain.mask)
        assert all((w > 0) == bool(m) for w, m in zip(weighted.weights, weighted.mask, strict=True))
        heavy = [tok.decode([i]) for i, w in zip(weighted.ids, weighted.weights, strict=True) if w == 5.0]
        models = [c.arguments["model"] for c in trajectory.calls]
        spelled = "".join(heavy)
        assert all(name in spelled for name in models) and "tool_call" not in spelled and "{" not in spelled
        weighted_any |= bool(heavy)
    assert weighted_any
