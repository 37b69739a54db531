"""TRLVLLMBackend: the policy's turns sampled by TRL's vLLM server (`trl vllm-serve`), with exact token ids.

GRPO with `use_vllm: true` generates the orchestrator's turns here instead of in the training process. Everything
but the sampling is `LocalBackend`'s, inherited unchanged: the conversation is rendered with the policy's tokenizer
and chat format, a later turn's prompt extends the earlier prompt + completion ids without re-tokenizing sampled
text, hermes tool calls are parsed from the decoded text, and `Completion.prompt_ids/completion_ids/logprobs` are
filled, so `orchestra.train.rollout.to_sequence` reads a vLLM rollout exactly as a local one. What changes is the
batch runner: prompt ids go to the server through TRL's `VLLMClient.generate` (token ids in, completion ids and
per-token log-probs out), and no transformers model runs here.

Invariants and departures
- The server must hold the policy's current weights: GRPOTrainer (TRL) pushes them after every optimizer step,
  before the next call of `rollout_func`; this backend never updates weights itself.
- Each row stops at any of the policy's end ids (EOS, `<|im_end|>`, the model's EOS ids), which vLLM includes in
  `completion_ids` as the local sampler does; stop strings are kept in the output (callers cut the text).
- `logprobs[i]` is the log-probability the server reports for `completion_ids[i]` (vLLM's default: the model's
  distribution before temperature, as `LocalBackend` reports).
- Sampling is not seeded: rows of one request share a vLLM seed, which would make a group's identical first prompts
  sample identical turns. A resumed run therefore draws different rollouts than an uninterrupted one.
- `first_call="required"` (grammar-forced first calls) needs the local model and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from orchestra.backends.base import Sampling
from orchestra.backends.generate import Generation
from orchestra.backends.local import LocalBackend
from orchestra.errors import BackendError, ConfigError


class GenerationClient(Protocol):
    """What this backend uses of TRL's `VLLMClient` (`trl.generation.vllm_client`)."""

    def generate(self, prompts: list[list[int]], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 logprobs: int | None, generation_kwargs: dict[str, Any] | None) -> dict[str, Any]: ...


class TRLVLLMBackend(LocalBackend):
    """A `LocalBackend` whose batches are sampled by a vLLM server (see the module docstring).

    `model` is the policy as the training process holds it: it is read for its context length and end ids, never run.
    """

    def __init__(self, client: GenerationClient, model: Any, tokenizer: Any, **kwargs: Any):
        if kwargs.get("first_call", "auto") == "required":
            raise ConfigError("first_call: required forces calls with the local model; use auto with vLLM")
        super().__init__(model, tokenizer, kv_cache_tokens=0, **kwargs)
        self.client = client

    @classmethod
    def beside(cls, local: LocalBackend, client: GenerationClient) -> TRLVLLMBackend:
        """A vLLM backend that renders and parses exactly as `local` (same tokenizer, chat format, name, limits)."""
        chat = local.chat_format
        return cls(client, local.lm, local.tokenizer, name=local.model, price=local.price,
                   max_batch_size=local.max_batch_size, max_context_tokens=local.max_context_tokens,
                   native_tools=chat.native_tools, native_tool_role=chat.native_tool_role,
                   render_tools=chat.render_tools, calls=chat.calls)

    def _generate_locked(self, prompts: Sequence[Sequence[int]], samplings: Sequence[Sampling]) -> list[Generation]:
        """One server request per distinct sampling setting among the rows, results back in row order."""
        out: list[Generation | None] = [None] * len(prompts)
        for sampling in dict.fromkeys(samplings):
            rows = [i for i, s in enumerate(samplings) if s == sampling]
            for i, generation in zip(rows, self._request([prompts[i] for i in rows], sampling), strict=True):
                out[i] = generation
        self._count(generate_calls=1, rows=len(prompts))
        return [g for g in out if g is not None]

    def _request(self, prompts: list[Sequence[int]], sampling: Sampling) -> list[Generation]:
        extra: dict[str, Any] = {"stop_token_ids": sorted(self.end_ids)}
        if sampling.stop:
            extra.update(stop=list(sampling.stop), include_stop_str_in_output=True)
        # Greedy is temperature 0 for vLLM as for the local sampler; top_p is then ignored by both.
        answer = self.client.generate([list(p) for p in prompts], n=1, temperature=sampling.temperature,
                                      top_p=sampling.top_p, max_tokens=sampling.max_tokens, logprobs=0,
                                      generation_kwargs=extra)
        ids, logprobs = answer.get("completion_ids"), answer.get("logprobs")
        if ids is None or logprobs is None or len(ids) != len(prompts) or len(logprobs) != len(prompts):
            raise BackendError(f"the vLLM server answered {len(ids or [])} completions with "
                               f"{'no' if logprobs is None else len(logprobs)} log-prob lists for {len(prompts)} "
                               "prompts")
        chosen = answer.get("logprob_token_ids") or [None] * len(ids)
        return [self._generation(list(row), row_logprobs, row_ids, sampling)
                for row, row_logprobs, row_ids in zip(ids, logprobs, chosen, strict=True)]

    def _generation(self, ids: list[int], logprobs: list[Any], logprob_ids: list[Any] | None,
                    sampling: Sampling) -> Generation:
        """One row: its sampled ids, the sampled token's log-prob at each position, why it stopped."""
        if len(logprobs) != len(ids):
            raise BackendError(f"the vLLM server sent {len(logprobs)} log-probs for {len(ids)} tokens")
        picked = [_sampled_logprob(token, lps, logprob_ids[i] if logprob_ids else None)
                  for i, (token, lps) in enumerate(zip(ids, logprobs, strict=True))]
        ended = bool(ids) and ids[-1] in self.end_ids
        finish = "stop" if ended or len(ids) < sampling.max_tokens else "length"
        return Generation(tuple(ids), tuple(picked), finish)


def _sampled_logprob(token: int, logprobs: Any, token_ids: Sequence[int] | None) -> float:
    """The log-prob of `token` among a position's entries (a float, or top-k lists sorted by probability whose
    token ids are `token_ids`; vLLM lists the sampled token even when it falls outside the top k)."""
    if isinstance(logprobs, int | float):
        return float(logprobs)
    if token_ids is not None and token in token_ids:
        return float(logprobs[list(token_ids).index(token)])
    return float(logprobs[0])
