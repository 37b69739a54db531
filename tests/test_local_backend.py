"""LocalBackend: rendering, sampling, batching, exact ids across turns, episodes, context limits, cache reuse.

Everything runs on a tiny random Qwen3 and a byte-level BPE tokenizer (orchestra.backends.tiny) in seconds. GGUF
loading and the real SmolLM2 are in test_gguf.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest
import torch

from orchestra.backends.base import Sampling
from orchestra.backends.chat_format import ChatFormat
from orchestra.backends.generate import _draw, _top_p
from orchestra.backends.local import LocalBackend
from orchestra.backends.tiny import CHATML_TOOLS_TEMPLATE, tiny_model, tiny_tokenizer
from orchestra.errors import BackendError, ConfigError, ContextLengthError
from orchestra.preferences import Limits
from orchestra.rollout.episode import run_episode
from orchestra.task import Task
from orchestra.toolcalls import parse_tool_calls
from orchestra.tools import Toolbox, tool
from orchestra.types import Message, Termination, ToolCall
from tests.forced_model import ForcedLM, recorded_input_shapes


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer.
        b: the second integer.
    """
    return a + b


ADD = tool(add)
GREEDY = Sampling(temperature=0.0, max_tokens=24)
CALL_TEXT = '\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n'


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def backend(tok):
    return LocalBackend(tiny_model(tok, seed=0), tok, name="tiny")


def char_ids(tok, text: str) -> list[int]:
    """One id per character (ASCII): a legal but non-canonical tokenization of `text`."""
    ids = []
    for ch in text:
        (one,) = tok.encode(ch, add_special_tokens=False)
        ids.append(one)
    return ids


def forced_call_ids(tok) -> list[int]:
    return [tok.convert_tokens_to_ids("<tool_call>"), *char_ids(tok, CALL_TEXT), tok.convert_tokens_to_ids("</tool_call>")]


# --- rendering ---------------------------------------------------------------------------------------------------

def test_tools_render_into_system_message_in_hermes_style(tok):
    fmt = ChatFormat(tok)
    assert not fmt.native_tools and not fmt.native_tool_role
    text = fmt.render([Message("system", "Be brief."), Message("user", "2+2?")], [ADD.spec], add_generation_prompt=True)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    listed = json.loads(system.split("<tools>\n")[1].split("\n</tools>")[0])
    assert listed == [ADD.spec.to_openai()]
    assert "<tool_call>" in system and "You are a tiny test model" not in text
    assert text.endswith("<|im_start|>assistant\n")
    bare = fmt.render([Message("user", "hi")], [ADD.spec], add_generation_prompt=False)
    assert bare.startswith("<|im_start|>system\n# Tools") and "<|im_start|>user\nhi<|im_end|>" in bare


def test_tool_calls_and_tool_messages_render_as_hermes_blocks(tok):
    fmt = ChatFormat(tok)
    calls = (ToolCall("c0", "add", {"a": 1, "b": 2}), ToolCall("c1", "add", {"a": 3, "b": 4}),
             ToolCall("c2", "", {}, error="invalid JSON"))
    messages = [Message("user", "sum"), Message("assistant", "Let me add.", tool_calls=calls),
                Message("tool", "3", tool_call_id="c0", name="add"), Message("tool", "7", tool_call_id="c1", name="add")]
    text = fmt.render(messages, [], add_generation_prompt=True)
    assistant = text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    visible, parsed = parse_tool_calls(assistant)
    assert visible == "Let me add."
    assert [(c.name, c.arguments) for c in parsed] == [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})]
    assert "<|im_start|>user\n<tool_response>\n3\n</tool_response>\n<tool_response>\n7\n</tool_response><|im_end|>" \
        in text
    assert "<|im_start|>tool" not in text


def test_native_template_gets_tools_and_tool_role(tok):
    fmt = ChatFormat(tiny_tokenizer(CHATML_TOOLS_TEMPLATE))
    assert fmt.native_tools and fmt.native_tool_role
    messages = [Message("system", "S"), Message("user", "U"),
                Message("assistant", "", tool_calls=(ToolCall("c0", "add", {"a": 1, "b": 2}),)),
                Message("tool", "3", tool_call_id="c0", name="add")]
    text = fmt.render(messages, [ADD.spec], add_generation_prompt=True)
    assert text.count('"name": "add"') == 2  # once in the template's tools block, once in the call
    assert "You may call one or more functions" not in text  # no hermes section added on top
    assert "<|im_start|>user\n<tool_response>\n3\n</tool_response><|im_end|>" in text


def test_render_tools_false_leaves_schemas_to_the_prompt_builder(tok):
    fmt = ChatFormat(tok, render_tools=False)
    text = fmt.render([Message("system", "Route it."), Message("user", "q")], [ADD.spec], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nRoute it.<|im_end|>") and "<tools>" not in text


# --- sampling ----------------------------------------------------------------------------------------------------

async def test_greedy_is_deterministic_and_ids_are_exact(backend, tok):
    messages = [Message("system", "sys"), Message("user", "What is 2 + 40?")]
    first = await backend.complete(messages, [ADD.spec], GREEDY)
    second = await backend.complete(messages, [ADD.spec], GREEDY)
    assert first.completion_ids == second.completion_ids and first.text == second.text
    rendered = backend.chat_format.render(messages, [ADD.spec], add_generation_prompt=True)
    assert first.prompt_ids == tuple(tok.encode(rendered, add_special_tokens=False))
    assert len(first.logprobs) == len(first.completion_ids) > 0
    assert first.usage.input_tokens == len(first.prompt_ids) and first.usage.output_tokens == len(first.completion_ids)
    assert first.finish_reason in {"stop", "length"} and first.cost_usd == 0.0 and first.model == "tiny"


async def test_logprobs_are_the_models_temperature_one_logprobs(backend):
    c = await backend.complete([Message("user", "hello there")], [], Sampling(temperature=0.7, top_p=0.9,
                                                                               max_tokens=16, seed=3))
    ids = torch.tensor([c.prompt_ids + c.completion_ids])
    with torch.no_grad():
        logits = backend.lm(input_ids=ids).logits[0].float()
    n = len(c.prompt_ids)
    expected = torch.log_softmax(logits[n - 1 : -1], dim=-1).gather(1, ids[0, n:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-4)


async def test_seeded_sampling_reproduces_and_seeds_differ(backend):
    messages = [Message("user", "tell me a story")]
    a = await backend.complete(messages, [], Sampling(temperature=1.0, max_tokens=20, seed=7))
    b = await backend.complete(messages, [], Sampling(temperature=1.0, max_tokens=20, seed=7))
    c = await backend.complete(messages, [], Sampling(temperature=1.0, max_tokens=20, seed=8))
    assert a.completion_ids == b.completion_ids
    assert a.completion_ids != c.completion_ids


async def test_stop_string_cuts_text_and_keeps_sampled_ids(backend):
    messages = [Message("user", "list the tools")]
    full = await backend.complete(messages, [], Sampling(max_tokens=24))
    stop = next(full.text[i : i + 2] for i in range(3, len(full.text) - 1)
                if full.text[i : i + 2].isascii() and full.text[i : i + 2].strip())
    cut = await backend.complete(messages, [], Sampling(max_tokens=24, stop=(stop,)))
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert full.text.startswith(cut.text)
    assert full.completion_ids[: len(cut.completion_ids)] == cut.completion_ids
    assert len(cut.completion_ids) < len(full.completion_ids)


def test_max_tokens_and_generate_batch(backend, tok):
    prompts = [tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), tok.encode("abc abc")]
    out = backend.generate_batch(prompts, [Sampling(max_tokens=5), Sampling(max_tokens=9, temperature=1.0, seed=1)])
    assert [len(ids) for ids, _ in out] == [len(lp) for _, lp in out]
    assert len(out[0][0]) <= 5 and len(out[1][0]) <= 9
    assert all(lp <= 0.0 for _, lps in out for lp in lps)
    rich = backend.generate(prompts[:1], Sampling(max_tokens=5))
    if rich[0].finish_reason == "length":
        assert len(rich[0].completion_ids) == 5
    else:
        assert rich[0].completion_ids[-1] in backend.end_ids


@pytest.mark.parametrize("bad", [Sampling(max_tokens=0), Sampling(temperature=-1.0), Sampling(top_p=0.0)])
async def test_invalid_sampling_is_a_config_error(backend, bad):
    with pytest.raises(ConfigError, match="sampling"):
        await backend.complete([Message("user", "x")], [], bad)
    with pytest.raises(ConfigError, match="sampling"):
        backend.generate_batch([[1, 2, 3]], bad)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    assert _top_p(probs.clone(), 0.7).tolist() == pytest.approx([0.0, 0.5, 0.3, 0.0])
    assert _top_p(probs.clone(), 0.4).tolist() == pytest.approx([0.0, 0.5, 0.0, 0.0])
    assert _top_p(probs.clone(), 1.0).tolist() == pytest.approx(probs.tolist())


def test_draw_samples_the_given_distribution():
    generator = torch.Generator().manual_seed(0)
    draws = [_draw(torch.tensor([0.2, 0.0, 0.8, 0.0]), generator) for _ in range(2000)]
    assert set(draws) == {0, 2}  # zero-probability tokens never come out
    assert 0.76 < draws.count(2) / len(draws) < 0.84


# --- batching ----------------------------------------------------------------------------------------------------

async def test_concurrent_completes_batch_and_match_one_by_one(tok):
    backend = LocalBackend(tiny_model(tok, seed=1), tok, max_batch_size=8, batch_wait_s=0.02)
    conversations = [[Message("user", "word " * (i * 3 + 1) + f"question {i}")] for i in range(8)]
    one_by_one = [await backend.complete(m, [ADD.spec], GREEDY) for m in conversations]
    calls_before = backend.stats.generate_calls
    started = time.perf_counter()
    together = await asyncio.gather(*(backend.complete(m, [ADD.spec], GREEDY) for m in conversations))
    assert time.perf_counter() - started < 30
    assert backend.stats.generate_calls - calls_before <= 2  # 8 requests, at most 2 model batches
    for alone, batched in zip(one_by_one, together, strict=True):
        assert batched.prompt_ids == alone.prompt_ids
        assert batched.completion_ids == alone.completion_ids
        assert batched.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


async def test_generation_failure_reaches_every_caller_as_backend_error(tok):
    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, **kwargs):
            raise RuntimeError("simulated out of memory")

    backend = LocalBackend(Broken(tiny_model(tok)), tok)
    results = await asyncio.gather(*(backend.complete([Message("user", "x")], [], GREEDY) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, BackendError) and "simulated out of memory" in str(r) for r in results)
    trajectory = await run_episode(Task("t", "x"), backend, Toolbox.of([ADD]))
    assert trajectory.termination == Termination.ERROR and "simulated" in trajectory.error


# --- exact ids across turns --------------------------------------------------------------------------------------

async def test_prefix_invariant_over_three_turns_with_non_canonical_samples(tok):
    call_ids = forced_call_ids(tok)
    answer_ids = char_ids(tok, "The answer is 3.")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    backend = LocalBackend(ForcedLM(tiny_model(tok), [call_ids, call_ids, answer_ids], end), tok)
    tools = [ADD.spec]
    messages = [Message("system", "You add numbers."), Message("user", "What is 1 + 2?")]
    turns, sent = [], []
    for new in ([Message("tool", "3", tool_call_id="?", name="add")], [Message("user", "Sure? Say it again.")], []):
        c = await backend.complete(messages, tools, Sampling(max_tokens=80))
        turns.append(c)
        sent.append(messages)
        messages = [*messages, Message("assistant", c.text, tool_calls=c.tool_calls), *new]
    first, second, third = turns
    assert first.completion_ids == (*call_ids, end) and first.tool_calls[0].arguments == {"a": 1, "b": 2}
    assert second.prompt_ids[: len(first.prompt_ids) + len(first.completion_ids)] == first.prompt_ids + first.completion_ids
    assert third.prompt_ids[: len(second.prompt_ids) + len(second.completion_ids)] == (
        second.prompt_ids + second.completion_ids)
    assert third.text == "The answer is 3." and not third.tool_calls
    assert backend.stats.prefix_hits == 2 and backend.stats.prefix_misses == 0
    # The point of the cache: re-tokenizing the rendered conversation would NOT give the ids the model sampled.
    retokenized = tok.encode(backend.chat_format.render(sent[1], tools, add_generation_prompt=True),
                             add_special_tokens=False)
    assert retokenized != list(second.prompt_ids)
    assert tok.encode(CALL_TEXT, add_special_tokens=False) != char_ids(tok, CALL_TEXT)


async def test_foreign_history_is_rendered_and_counted_as_a_miss(backend, tok):
    messages = [Message("user", "hi"), Message("assistant", "hello from elsewhere"), Message("user", "and?")]
    before = backend.stats.prefix_misses
    ids = backend.prompt_ids(messages, [])
    rendered = backend.chat_format.render(messages, [], add_generation_prompt=True)
    assert list(ids) == tok.encode(rendered, add_special_tokens=False)
    assert backend.stats.prefix_misses == before + 1


# --- episodes ----------------------------------------------------------------------------------------------------

async def test_run_episode_multi_turn_with_forced_tool_calls(tok):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    scripts = [forced_call_ids(tok), forced_call_ids(tok), char_ids(tok, "3")]
    backend = LocalBackend(ForcedLM(tiny_model(tok), scripts, end), tok)
    trajectory = await run_episode(Task("t1", "What is 1 + 2?"), backend, Toolbox.of([ADD]),
                                   limits=Limits(max_turns=5), sampling=Sampling(max_tokens=80))
    assert trajectory.termination == Termination.FINAL_MESSAGE and trajectory.final_answer == "3"
    assert len(trajectory.turns) == 3 and trajectory.tool_counts()["add"] == 2
    assert [o.content for o in trajectory.observations] == ["3", "3"]
    for earlier, later in itertools.pairwise(trajectory.turns):
        seen = earlier.completion.prompt_ids + earlier.completion.completion_ids
        assert later.completion.prompt_ids[: len(seen)] == seen


async def test_run_episode_with_the_random_tiny_model(tok):
    backend = LocalBackend(tiny_model(tok, seed=2), tok, name="tiny")
    toolbox = Toolbox.of([ADD])
    sampling = Sampling(temperature=1.0, max_tokens=32)
    trajectories = await asyncio.gather(*(
        run_episode(Task(f"t{i}", "What is 1 + 2? Use the add tool."), backend, toolbox,
                    limits=Limits(max_turns=3), sampling=sampling) for i in range(4)))
    for trajectory in trajectories:
        assert trajectory.termination in {Termination.FINAL_MESSAGE, Termination.MAX_TURNS}
        assert 1 <= len(trajectory.turns) <= 3 and trajectory.orchestrator == "tiny"
        for turn in trajectory.turns:
            c = turn.completion
            assert c.prompt_ids and c.completion_ids and len(c.logprobs) == len(c.completion_ids)
            assert len(turn.observations) == len(c.tool_calls)
        assert (trajectory.final_answer is not None) == (trajectory.termination == Termination.FINAL_MESSAGE)
    assert backend.stats.generate_calls < sum(len(t.turns) for t in trajectories)  # episodes shared batches


# --- context length ----------------------------------------------------------------------------------------------

async def test_prompt_over_the_context_window_raises_and_ends_the_episode(tok):
    backend = LocalBackend(tiny_model(tok), tok, max_context_tokens=64)
    long = [Message("user", "word " * 200)]
    with pytest.raises(ContextLengthError, match="64-token context"):
        await backend.complete(long, [], GREEDY)
    with pytest.raises(ContextLengthError):
        backend.generate_batch([list(range(64))], GREEDY)
    trajectory = await run_episode(Task("t", "word " * 200), backend, Toolbox.of([ADD]))
    assert trajectory.termination == Termination.CONTEXT and not trajectory.turns
    short = await backend.complete([Message("user", "hi")], [], Sampling(max_tokens=500))
    assert len(short.prompt_ids) + len(short.completion_ids) <= 64  # generation stops at the window


async def test_attention_cache_is_reused_across_turns_with_the_same_results(tok):
    """A later turn prefills only its new tokens on top of the stored cache, and samples what a full recompute
    would: the same ids, and the same log-probabilities up to float rounding."""
    end = tok.convert_tokens_to_ids("<|im_end|>")
    scripts = [forced_call_ids(tok), forced_call_ids(tok), char_ids(tok, "3")]

    def fresh(kv_tokens: int) -> LocalBackend:
        return LocalBackend(ForcedLM(tiny_model(tok, seed=3), scripts, end), tok, seed=0,
                            kv_cache_tokens=kv_tokens)

    async def three_turns(backend: LocalBackend):
        messages = [Message("user", "Add things.")]
        out = []
        for i in range(3):
            completion = await backend.complete(messages, [ADD.spec], Sampling(max_tokens=64))
            out.append(completion)
            reply = Message("assistant", completion.text, tool_calls=completion.tool_calls)
            messages += [reply, Message("tool", str(i), tool_call_id="c", name="add")]
        return out

    reused, recomputed = fresh(65_536), fresh(0)
    with_reuse = await three_turns(reused)
    without = await three_turns(recomputed)
    assert [c.completion_ids for c in with_reuse] == [c.completion_ids for c in without]
    assert [c.prompt_ids for c in with_reuse] == [c.prompt_ids for c in without]
    for a, b in zip(with_reuse, without, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    # turns 2 and 3 started from the stored cache of everything fed before them
    fed_before = [len(c.prompt_ids) + len(c.completion_ids) - 1 for c in with_reuse[:2]]
    assert reused.stats.kv_reused_tokens == sum(fed_before)
    assert recomputed.stats.kv_reused_tokens == 0


def test_a_shared_prompt_prefix_is_prefilled_once_with_the_same_results(backend, tok):
    """Rows that share a system prompt get its keys and values computed once; ids and log-probs match rows run alone."""
    from orchestra.backends import generate as gen

    system = tok.encode("You route questions to models. " * 4, add_special_tokens=False)
    prompts = [system + tok.encode(q, add_special_tokens=False) for q in ("what is 2+2?", "name a colour", "hi")]
    assert len(system) >= gen.MIN_SHARED_PREFIX
    sampling = [Sampling(temperature=1.0, max_tokens=12, seed=s) for s in range(3)]
    kwargs = {"end_ids": backend.end_ids, "pad_id": backend.pad_id, "max_context_tokens": 512,
              "decode": lambda ids: tok.decode(ids)}
    model = backend.lm
    with recorded_input_shapes(model) as shapes:
        together = gen.generate_rows(model, prompts, sampling, seeds=[0, 1, 2], **kwargs)
    alone = [gen.generate_rows(model, [p], [s], seeds=[i], **kwargs)[0]
             for i, (p, s) in enumerate(zip(prompts, sampling, strict=True))]
    assert shapes[0] == (1, len(system))  # the shared part, once
    assert shapes[1][1] <= max(len(p) for p in prompts) - len(system)  # then only what differs
    for a, b in zip(together, alone, strict=True):
        assert a.completion_ids == b.completion_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_a_long_row_is_staged_apart_with_the_same_results(backend, tok):
    """One row with far more to prefill than the rest is prefilled on its own first; every row's ids and log-probs
    still match the row run alone, and the batch's joint prefill feeds only the short rows' width."""
    from orchestra.backends import generate as gen

    short = [tok.encode(q, add_special_tokens=False) for q in ("what is 2+2?", "name a colour", "hi there")]
    long = tok.encode("tell me a long story about routers and models " * 8, add_special_tokens=False)
    prompts = [*short, long]
    assert len(long) > 2 * sorted(len(p) for p in prompts)[2] + 32
    sampling = [Sampling(temperature=0.0, max_tokens=10)] * 4
    kwargs = {"end_ids": backend.end_ids, "pad_id": backend.pad_id, "max_context_tokens": 512,
              "decode": lambda ids: tok.decode(ids)}
    model = backend.lm
    with recorded_input_shapes(model) as shapes:
        together = gen.generate_rows(model, prompts, sampling, seeds=[0, 1, 2, 3], **kwargs)
    widths = [width for _, width in shapes]
    alone = [gen.generate_rows(model, [p], [s], seeds=[i], **kwargs)[0]
             for i, (p, s) in enumerate(zip(prompts, sampling, strict=True))]
    assert widths[0] == len(long) - 1  # the long row, staged
    assert widths[1] == max(len(p) for p in short)  # then the batch, no wider than its short rows
    for a, b in zip(together, alone, strict=True):
        assert a.completion_ids == b.completion_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
