"""Test doubles around a real causal LM, shared by the local-backend and rollout tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class ForcedLM(torch.nn.Module):
    """A causal LM whose i-th generation emits `scripts[i]` and then the end id, whatever its weights say (a +100
    logit bias), so scripted replies go through the real sampling path with real logprobs, and tests can make the
    model sample ids that are NOT the tokenizer's canonical split of their text. A generation starts with a prefill:
    a forward over more than one new token, or one asked for the last logits only (a prefill may start from cached
    keys and values of an earlier turn, so the cache being empty is not the sign)."""

    def __init__(self, inner: torch.nn.Module, scripts: list[list[int]], end_id: int):
        super().__init__()
        self.inner, self.config, self.scripts, self.end_id = inner, inner.config, scripts, end_id
        self.generation, self.step = -1, 0

    def forward(self, input_ids, past_key_values=None, **kwargs):
        if input_ids.shape[1] > 1 or "logits_to_keep" in kwargs:
            self.generation, self.step = self.generation + 1, 0
        out = self.inner(input_ids=input_ids, past_key_values=past_key_values, **kwargs)
        script = [*self.scripts[min(self.generation, len(self.scripts) - 1)], self.end_id]
        out.logits[:, -1, script[min(self.step, len(script) - 1)]] += 100.0
        self.step += 1
        return out


@contextlib.contextmanager
def recorded_input_shapes(model: torch.nn.Module) -> Iterator[list[tuple[int, int]]]:
    """Within the block, the (rows, tokens) shape of every forward's `input_ids`, in call order."""
    shapes: list[tuple[int, int]] = []
    real_forward = model.forward

    def recording_forward(*args, **kwargs):
        ids = kwargs["input_ids"]
        shapes.append((int(ids.shape[0]), int(ids.shape[1])))
        return real_forward(*args, **kwargs)

    model.forward = recording_forward
    try:
        yield shapes
    finally:
        del model.forward
