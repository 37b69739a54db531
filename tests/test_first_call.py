"""`first_call="required"`: the first reply is one call of an offered tool, decoded under the tools' grammar.

A tiny random model (it would never write a valid call by itself) shows the structure holds whatever the model
samples; the ids stay exact (they decode to the reply; the next turn extends them unchanged).
"""

from __future__ import annotations

import pytest

from orchestra.backends.base import Sampling
from orchestra.backends.local import LocalBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.errors import ConfigError
from orchestra.tools.spec import tool
from orchestra.types import Message


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: the expression
    """
    return expression


def scale(factor: int, label: str = "x") -> str:
    """Scale something.

    Args:
        factor: how much
        label: what
    """
    return label * factor


TOOLS = [tool(calculator).spec, tool(scale).spec]
ASK = [Message("system", "You can call tools."), Message("user", "What is 17 * 23 + 4?")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_the_first_reply_is_one_valid_call_of_an_offered_tool(tok, seed):
    backend = LocalBackend(tiny_model(tok, seed=seed), tok, name="tiny", first_call="required")
    completion = await backend.complete(ASK, TOOLS, Sampling(max_tokens=48))
    assert len(completion.tool_calls) == 1, completion
    (call,) = completion.tool_calls
    assert call.error is None and call.name in {"calculator", "scale"}
    required = {"calculator": {"expression"}, "scale": {"factor"}}[call.name]
    assert set(call.arguments) == required
    assert completion.finish_reason == "stop" and len(completion.completion_ids) == len(completion.logprobs)
    assert completion.completion_ids[-1] in backend.end_ids
    text = tok.decode(list(completion.completion_ids[:-1]), skip_special_tokens=False)
    assert text.startswith('<tool_call>\n{"name": "') and text.endswith("}}\n</tool_call>")
    # A later turn is free again, and extends the ids the model read unchanged.
    later = [*ASK, Message("assistant", completion.text, tool_calls=completion.tool_calls),
             Message("tool", "395", tool_call_id=call.id, name=call.name)]
    ids = backend.prompt_ids(later, TOOLS)
    assert ids[: len(completion.prompt_ids) + len(completion.completion_ids)] == (
        completion.prompt_ids + completion.completion_ids)


async def test_without_tools_or_after_the_first_reply_nothing_is_forced(tok):
    backend = LocalBackend(tiny_model(tok, seed=0), tok, name="tiny", first_call="required")
    plain = LocalBackend(tiny_model(tok, seed=0), tok, name="tiny")
    sampling = Sampling(max_tokens=12, seed=5)
    assert (await backend.complete(ASK, [], sampling)).completion_ids == \
        (await plain.complete(ASK, [], sampling)).completion_ids


def test_first_call_must_be_auto_or_required(tok):
    with pytest.raises(ConfigError, match="first_call"):
        LocalBackend(tiny_model(tok, seed=0), tok, first_call="always")


@pytest.mark.integration
def test_the_readme_tour_first_command_calls_the_calculator_and_answers_395():
    """`orchestra run "What is 17 * 23 + 4?"` with the embedded default pool, as a newcomer runs it (~1-2 min)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "orchestra")
    done = subprocess.run([exe, "run", "What is 17 * 23 + 4?", "--json"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["calls"].get("calculator", 0) >= 1, summary
    assert "395" in summary["answer"] and "347" not in summary["answer"], summary
