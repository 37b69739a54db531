"""TRLVLLMBackend (backends/trl_vllm.py): orchestrator turns sampled by TRL's vLLM server, with exact token ids.

vLLM is CUDA-only, so the server is replaced by a fake client with the methods and answer shapes of TRL's
`VLLMClient.generate` (prompt ids in; completion ids, top-k log-prob lists and their token ids out). The local tiny
model is the policy as the trainer holds it: the tests check it is never run.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from orchestra.backends.base import Sampling
from orchestra.backends.local import LocalBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.backends.trl_vllm import TRLVLLMBackend
from orchestra.errors import BackendError, ConfigError
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeResult
from orchestra.rollout.episode import run_episode
from orchestra.task import Task
from orchestra.tools import Toolbox, tool
from orchestra.train.config import GRPOConfig
from orchestra.train.grpo_trl import train_grpo, vllm_sampler, vllm_server_settings
from orchestra.train.rollout import to_sequence
from orchestra.types import Message, Outcome, Termination


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer.
        b: the second integer.
    """
    return a + b


ADD = tool(add)
CALL_TEXT = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'


class FakeVLLMClient:
    """Answers like `VLLMClient.generate`: the i-th prompt ever sent gets `scripts[i]` (then an end id unless
    `end` is None), each token with log-prob -(position + 1) / 10 listed second in a top-2 list behind a decoy."""

    def __init__(self, scripts: list[list[int]], end: int | None, decoy: int = 0):
        self.scripts, self.end, self.decoy = scripts, end, decoy
        self.calls: list[tuple[list[list[int]], dict[str, Any]]] = []
        self._next = itertools.count()

    def generate(self, prompts: list[list[int]], **kwargs: Any) -> dict[str, Any]:
        self.calls.append((prompts, kwargs))
        completions = []
        for _ in prompts:
            script = self.scripts[min(next(self._next), len(self.scripts) - 1)]
            completions.append(script + ([self.end] if self.end is not None else []))
        return {
            "prompt_ids": prompts,
            "completion_ids": completions,
            "logprobs": [[[-0.05, -(k + 1) / 10] for k in range(len(ids))] for ids in completions],
            "logprob_token_ids": [[[self.decoy, token] for token in ids] for ids in completions],
        }


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def policy(tok):
    """The tiny model as the trainer's policy, counting its forward passes (there must be none)."""
    model = tiny_model(tok)
    model.forward_calls = 0

    def count(*_: Any) -> None:
        model.forward_calls += 1

    model.register_forward_pre_hook(count)
    return model


def encode(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


async def test_an_episode_samples_every_turn_on_the_server_and_trains_token_exactly(tok, policy):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    scripts = [encode(tok, CALL_TEXT), encode(tok, CALL_TEXT), encode(tok, "3")]
    client = FakeVLLMClient(scripts, end, decoy=encode(tok, "x")[0])
    local = LocalBackend(policy, tok, name="tiny", render_tools=False)
    backend = TRLVLLMBackend.beside(local, client)

    trajectory = await run_episode(Task("t1", "What is 1 + 2?"), backend, Toolbox.of([ADD]),
                                   limits=Limits(max_turns=5), sampling=Sampling(temperature=1.0, max_tokens=80))

    assert trajectory.termination == Termination.FINAL_MESSAGE and trajectory.final_answer == "3"
    assert trajectory.tool_counts()["add"] == 2 and [o.content for o in trajectory.observations] == ["3", "3"]
    assert policy.forward_calls == 0  # every token came from the server
    assert len(client.calls) == 3
    for turn, (sent, _), script in zip(trajectory.turns, client.calls, scripts, strict=True):
        c = turn.completion
        assert list(c.prompt_ids) == sent[0]  # the ids the server read are the ones recorded
        assert list(c.completion_ids) == [*script, end]
        assert list(c.logprobs) == pytest.approx([-(k + 1) / 10 for k in range(len(script) + 1)])
    first = trajectory.turns[0].completion
    for earlier, later in itertools.pairwise(trajectory.turns):
        seen = earlier.completion.prompt_ids + earlier.completion.completion_ids
        assert later.completion.prompt_ids[: len(seen)] == seen  # never re-tokenized
    assert backend.stats.prefix_hits == 2 and backend.stats.prefix_misses == 0

    sequence = to_sequence(EpisodeResult(Task("t1", "What is 1 + 2?"), trajectory, Outcome(solved=True)))
    assert sequence.prompt_ids == first.prompt_ids
    sampled = [i for i, m in zip(sequence.completion_ids, sequence.env_mask, strict=True) if m]
    assert sampled == [t for turn in trajectory.turns for t in turn.completion.completion_ids]


async def test_prompts_render_exactly_as_the_local_backend_renders_them(tok, policy):
    local = LocalBackend(policy, tok, render_tools=True)
    client = FakeVLLMClient([encode(tok, "hi")], tok.convert_tokens_to_ids("<|im_end|>"))
    backend = TRLVLLMBackend.beside(local, client)
    messages = [Message("system", "You add numbers."), Message("user", "What is 1 + 2?")]
    completion = await backend.complete(messages, [ADD.spec], Sampling())
    assert completion.prompt_ids == local.prompt_ids(messages, [ADD.spec])
    assert "add" in tok.decode(list(completion.prompt_ids))  # render_tools carried over from the local backend
    assert completion.text == "hi" and completion.finish_reason == "stop"


def test_sampling_settings_reach_the_server_one_request_per_setting_in_row_order(tok, policy):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    client = FakeVLLMClient([[5], [6], [7]], end)
    backend = TRLVLLMBackend(client, policy, tok)
    hot = Sampling(temperature=0.9, top_p=0.8, max_tokens=33, stop=("STOP",))
    cold = Sampling(temperature=0.0, max_tokens=12)
    rows = backend.generate([[1, 2], [3], [4, 4]], [hot, cold, hot])
    assert [r.completion_ids for r in rows] == [(5, end), (7, end), (6, end)]  # hot rows went first, as one request
    (hot_prompts, hot_kw), (cold_prompts, cold_kw) = client.calls
    assert hot_prompts == [[1, 2], [4, 4]] and cold_prompts == [[3]]
    assert (hot_kw["temperature"], hot_kw["top_p"], hot_kw["max_tokens"], hot_kw["n"]) == (0.9, 0.8, 33, 1)
    assert hot_kw["logprobs"] == 0 and cold_kw["temperature"] == 0.0
    assert hot_kw["generation_kwargs"] == {"stop_token_ids": sorted(backend.end_ids), "stop": ["STOP"],
                                           "include_stop_str_in_output": True}
    assert cold_kw["generation_kwargs"] == {"stop_token_ids": sorted(backend.end_ids)}
    assert policy.forward_calls == 0


def test_a_row_cut_at_max_tokens_finishes_with_length(tok, policy):
    client = FakeVLLMClient([[5, 6, 7]], end=None)
    backend = TRLVLLMBackend(client, policy, tok)
    (row,) = backend.generate([[1]], Sampling(max_tokens=3))
    assert row.finish_reason == "length" and row.logprobs == pytest.approx((-0.1, -0.2, -0.3))


@pytest.mark.parametrize("answer, says", [
    ({"completion_ids": [[5]]}, "no log-prob"),
    ({"completion_ids": [[5], [6]], "logprobs": [[[-1.0]], [[-1.0]]]}, "2 completions"),
    ({"completion_ids": [[5, 6]], "logprobs": [[[-1.0]]]}, "1 log-probs for 2 tokens"),
])
async def test_a_malformed_server_answer_is_a_backend_error(tok, policy, answer, says):
    client = SimpleNamespace(generate=lambda prompts, **kw: answer)
    backend = TRLVLLMBackend(client, policy, tok)
    with pytest.raises(BackendError, match=says):
        await backend.complete([Message("user", "x")], [], Sampling())


def test_forced_first_calls_need_the_local_model(tok, policy):
    with pytest.raises(ConfigError, match="first_call"):
        TRLVLLMBackend(FakeVLLMClient([[5]], 0), policy, tok, first_call="required")


# --- GRPO's use of it (train/grpo_trl.py) ------------------------------------------------------------------------

def test_grpo_samples_through_the_client_trl_opened_on_the_main_process(tok, policy):
    client = FakeVLLMClient([[5]], tok.convert_tokens_to_ids("<|im_end|>"))
    trainer = SimpleNamespace(vllm_generation=SimpleNamespace(vllm_client=client))
    local = LocalBackend(policy, tok, name="policy", render_tools=False)
    sampler = vllm_sampler(trainer, local, GRPOConfig(use_vllm=True))
    assert isinstance(sampler, TRLVLLMBackend) and sampler.client is client
    assert sampler.model == "policy" and sampler.chat_format.render_tools is False
    assert sampler.end_ids == local.end_ids and sampler.max_context_tokens == local.max_context_tokens


def test_other_processes_open_their_own_client_at_the_configured_server(tok, policy, monkeypatch):
    opened: list[dict[str, Any]] = []

    class Client(FakeVLLMClient):
        def __init__(self, **kwargs: Any):
            opened.append(kwargs)
            super().__init__([[5]], None)

    monkeypatch.setattr("trl.generation.vllm_client.VLLMClient", Client)
    config = GRPOConfig(use_vllm=True, vllm_server_url="http://10.0.0.7:8100", vllm_server_timeout_s=30)
    sampler = vllm_sampler(SimpleNamespace(), LocalBackend(policy, tok), config)
    assert opened == [{"base_url": "http://10.0.0.7:8100", "connection_timeout": 30.0}]
    assert isinstance(sampler.client, Client)


def test_trl_is_told_to_use_its_vllm_server_mode():
    from trl import GRPOConfig as TRLConfig

    config = GRPOConfig(use_vllm=True, vllm_server_url="http://127.0.0.1:8123")
    settings = vllm_server_settings(config)
    assert settings == {"vllm_mode": "server", "vllm_server_base_url": "http://127.0.0.1:8123",
                        "vllm_server_timeout": 240.0}
    args = TRLConfig(output_dir="unused", use_cpu=True, use_vllm=True, per_device_train_batch_size=4,
                     num_generations=4, report_to=[], **settings)
    assert args.use_vllm and args.vllm_mode == "server" and args.vllm_server_base_url == "http://127.0.0.1:8123"
    assert vllm_server_settings(GRPOConfig()) == {}


def test_use_vllm_without_vllm_installed_is_one_config_error_before_anything_loads(monkeypatch, tmp_path):
    import importlib

    trl_imports = importlib.import_module("trl.import_utils")
    monkeypatch.setattr(trl_imports, "is_vllm_available", lambda: False)  # as on a machine without CUDA
    config = GRPOConfig(use_vllm=True, model={"kind": "local", "path": str(tmp_path / "no-model")},
                        output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="use_vllm: vLLM is not installed"):
        train_grpo(config)
    assert not (tmp_path / "out").exists()
