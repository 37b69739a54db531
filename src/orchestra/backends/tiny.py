"""Tiny random models and tokenizers: a Qwen3-style causal LM and a byte-level BPE tokenizer with ChatML.

Built in well under a second, offline, deterministic (same seed, same weights; the tokenizer is trained on a fixed
corpus plus any extra text given). Used by the tests and by `orchestra demo --quick`, which trains one in minutes.

- `tiny_tokenizer()`: byte-level BPE (any text round-trips through bytes), ChatML chat template without a tools
  section (like SmolLM2's), special tokens `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos) and added
  tokens `<tool_call>`, `</tool_call>`, `<tool_response>`, `</tool_response>`, `<think>`, `</think>` (one id each,
  not "special", so decoding with `skip_special_tokens=True` keeps them, as in Qwen3).
- `tiny_model(tokenizer, seed)`: a 2-layer Qwen3ForCausalLM sized to the tokenizer, eval mode, float32. Its
  `initializer_range` is larger than usual so that its (random) next-token distributions are peaked: greedy decoding
  then has no near-ties that float noise from batching could flip.
- `CHATML_TOOLS_TEMPLATE`: a Qwen-style template that renders `tools=` and the tool role natively, for tests of the
  native path.
"""

from __future__ import annotations

import functools

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CHATML_TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools><|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user{% endif %}"
    "{{ '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>")

_CORPUS = (
    "You are an orchestrator. Solve the user's task by calling tools.",
    '{"name": "search", "arguments": {"query": "capital of France", "k": 3}}',
    '{"name": "answer", "arguments": {"text": "Paris"}}',
    '{"name": "add", "arguments": {"a": 2, "b": 40}}',
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } : , .",
    "What is the capital of France? The answer is Paris. What is 2 + 40? It is 42.",
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "cost latency price tokens budget tool model call search answer expert user assistant system",
)


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int, extra: tuple[str, ...] = ()) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 4 + list(extra), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(chat_template: str = CHATML_TEMPLATE, vocab_size: int = 512, extra_corpus: tuple[str, ...] = ()):
    """A fresh byte-level BPE tokenizer (transformers fast tokenizer) with a ChatML chat template; `extra_corpus`
    adds text to train the merges on (so that a task's prompts tokenize compactly)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(_trained_tokenizer_json(vocab_size, tuple(extra_corpus)))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=2048,
    )
    out.chat_template = chat_template
    return out


def tiny_model(tokenizer, seed: int = 0, *, hidden_size: int = 64, num_layers: int = 2,
               max_position_embeddings: int = 2048, initializer_range: float = 0.2):
    """A random Qwen3ForCausalLM sized to `tokenizer` (float32, eval mode); same seed, same weights."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen3ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)  # building a fixture must not perturb the caller's RNG
    return model.to(torch.float32).eval()
