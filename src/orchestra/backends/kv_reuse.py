"""Reusing a conversation's attention cache across turns of a local model.

After a turn, the model has already computed keys and values for every token it read and wrote. The next turn's
prompt extends exactly those tokens (the backend keeps ids, never re-tokenizes), so only the new tokens (the tool
results and the template text) need a forward pass. `KVStore` keeps, per finished turn, the keys and values of the
tokens fed to the model, keyed by the conversation's ids; `LocalBackend` tells it which earlier turn a new prompt
extends (`expect`), and `generate_rows` prefills only the suffix on top of the stored cache.

Bounded: at most `max_tokens` tokens' worth of cache are kept (least recently used first out); a miss only costs
the recomputation. Only models whose every cache layer is a plain full-attention layer take part (sliding-window
caches drop old positions, so their stored state cannot be extended the same way).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PrefixKV:
    """Keys and values of `length` tokens, one (heads, length, head_dim) tensor pair per layer."""

    length: int
    keys: tuple[Any, ...]
    values: tuple[Any, ...]


class KVStore:
    """LRU store of per-conversation caches, plus which stored cache each pending prompt extends."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max(0, max_tokens)
        self._entries: OrderedDict[tuple[int, ...], PrefixKV] = OrderedDict()
        self._expected: OrderedDict[tuple[int, ...], tuple[int, ...]] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()

    def expect(self, prompt: Sequence[int], fed: Sequence[int]) -> None:
        """`prompt` extends a conversation whose tokens `fed` were already fed to the model."""
        if not self.max_tokens:
            return
        with self._lock:
            self._expected[tuple(prompt)] = tuple(fed)
            while len(self._expected) > 4096:
                self._expected.popitem(last=False)

    def take(self, prompt: Sequence[int]) -> PrefixKV | None:
        """The stored cache `prompt` extends, if it is still kept (it must leave at least one token to feed)."""
        with self._lock:
            fed = self._expected.get(tuple(prompt))  # rows of one GRPO group may share a prompt: keep it
            if fed is None:
                return None
            entry = self._entries.get(fed)
            if entry is None or entry.length >= len(prompt) or tuple(prompt[: entry.length]) != fed:
                return None
            self._entries.move_to_end(fed)
            return entry

    def put(self, fed: Sequence[int], kv: PrefixKV) -> None:
        if not self.max_tokens or kv.length > self.max_tokens:
            return
        key = tuple(fed)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._tokens -= old.length
            self._entries[key] = kv
            self._tokens += kv.length
            while self._tokens > self.max_tokens and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._tokens -= dropped.length

    @property
    def tokens(self) -> int:
        return self._tokens


def supports_reuse(cache: Any) -> bool:
    """True when every layer of a transformers cache is a plain (full-attention) dynamic layer."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, _growing_layer_class()) for layer in layers)


def growing_cache(model: Any) -> Any:
    """A `DynamicCache` for `model` whose full-attention layers grow in place (see `_growing_layer_class`)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    layers = getattr(cache, "layers", None)
    if layers and all(type(layer) is DynamicLayer for layer in layers):
        cache.layers = [_growing_layer_class()() for _ in layers]
    return cache


_GROWING: list[type] = []


def _growing_layer_class() -> type:
    """`GrowingLayer`: a `DynamicLayer` that writes new keys and values into spare capacity instead of
    concatenating (transformers' layer copies its whole cache on every decoded token, a third of a batched decode
    step on CPU). `keys`/`values` are views of the filled part; capacity grows by half when full.
    Defined lazily so that importing this module does not import torch."""
    if _GROWING:
        return _GROWING[0]
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            self._k = self._v = None
            self._filled = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            need = self._filled + new
            if self._k is None or need > self._k.shape[-2]:
                capacity = need + max(64, need // 2)
                shape = (*key_states.shape[:-2], capacity, key_states.shape[-1])
                k, v = key_states.new_empty(shape), value_states.new_empty(shape)
                if self._k is not None and self._filled:
                    k[..., : self._filled, :] = self._k[..., : self._filled, :]
                    v[..., : self._filled, :] = self._v[..., : self._filled, :]
                self._k, self._v = k, v
            self._k[..., self._filled : need, :] = key_states
            self._v[..., self._filled : need, :] = value_states
            self._filled = need
            self.keys, self.values = self._k[..., :need, :], self._v[..., :need, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._filled if self.is_initialized else 0

        def batch_select_indices(self, indices: Any) -> None:
            if self.get_seq_length() > 0:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys, self.values = self._k[..., : self._filled, :], self._v[..., : self._filled, :]

        def reset(self) -> None:
            self._k = self._v = None
            self._filled = 0
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)  # validates the argument and cuts the views
            if self.is_initialized and self.keys is not None:
                self._filled = self.keys.shape[-2]

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self.keys, self.values = self._k[..., : self._filled, :], self._v[..., : self._filled, :]

    _GROWING.append(GrowingLayer)
    return GrowingLayer
