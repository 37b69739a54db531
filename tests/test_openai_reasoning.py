"""OpenAI wire for reasoning models, served names, extra body fields, streaming and rate limits.

Against the scripted OpenAI-compatible server on 127.0.0.1 behind `reasoning_rules`, which answers 400 exactly as
OpenAI does when a reasoning model (gpt-5*, o1*, o3*, o4*) is sent `max_tokens`, `stop` or a non-default
`temperature`: each test asserts which body fields reached the server.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from orchestra.backends.base import Sampling
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.openai_wire import is_reasoning_model
from orchestra.backends.pricing import ModelPrice
from orchestra.errors import BackendError, ConfigError
from orchestra.pool import build_pool, load_pool_config
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message, ToolCall
from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, always, reasoning_rules

PRICE = ModelPrice(1.0, 2.0)
ASK = [Message("user", "What is 2 + 3?")]
SAMPLING = Sampling(temperature=0.0, max_tokens=64, stop=("\n\n",))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with ScriptedOpenAIServer(reasoning_rules(always(Reply("5")))) as s:
        yield s


def _complete(backend: OpenAICompatBackend):
    async def go():
        async with backend:
            return await backend.complete(ASK, [], SAMPLING)

    return asyncio.run(go())


@pytest.mark.parametrize(("name", "expected"), [
    ("gpt-5", True), ("gpt-5-mini", True), ("o1-preview", True), ("o3-mini", True), ("o4-mini", True),
    ("openai/gpt-5", True), ("gpt-4o", False), ("qwen3-8b", False), ("omni-7b", False), ("llama-o3", False),
])
def test_reasoning_by_name_prefix(name: str, expected: bool) -> None:
    assert is_reasoning_model(name) is expected


def test_reasoning_model_gets_max_completion_tokens_and_no_sampling_fields(server) -> None:
    completion = _complete(OpenAICompatBackend("gpt-5", server.base_url, price=PRICE, max_attempts=1))
    assert completion.text == "5"
    (seen,) = server.requests
    assert set(seen.body) == {"model", "messages", "max_completion_tokens"}
    assert seen.body["max_completion_tokens"] == 64


def test_other_model_gets_max_tokens_and_sampling_fields(server) -> None:
    _complete(OpenAICompatBackend("qwen3-8b", server.base_url, price=PRICE, max_attempts=1))
    (seen,) = server.requests
    assert set(seen.body) == {"model", "messages", "temperature", "top_p", "max_tokens", "stop"}
    assert (seen.body["temperature"], seen.body["max_tokens"]) == (0.0, 64)


def test_forcing_reasoning_off_hits_the_400_the_fix_avoids(server) -> None:
    # The control: the scripted rules really reject what the old wire sent, and the 400 is not retried.
    with pytest.raises(BackendError, match="HTTP 400.*Unsupported parameter: 'max_tokens'"):
        _complete(OpenAICompatBackend("gpt-5", server.base_url, price=PRICE, reasoning=False, max_attempts=3))
    assert len(server.requests) == 1 and "temperature" in server.requests[0].body


def test_served_name_decides_and_is_sent(server) -> None:
    backend = OpenAICompatBackend("qwen3-8b", server.base_url, price=PRICE, api_model="o3-mini-2025-01-31",
                                  extra_body={"reasoning_effort": "low"})
    _complete(backend)
    (seen,) = server.requests
    assert seen.body["model"] == "o3-mini-2025-01-31" and seen.body["reasoning_effort"] == "low"
    assert "temperature" not in seen.body and "max_tokens" not in seen.body


def _pool_yaml(tmp_path: Path, url: str, expert: str) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(textwrap.dedent(f"""\
        orchestrator: {{kind: openai, model: qwen3-8b, base_url: {url}}}
        tools:
          - name: gpt5
            expert: {expert}
    """))
    return path


def test_pool_yaml_fields_reach_the_wire(server, tmp_path: Path) -> None:
    expert = (f"{{kind: openai, model: gpt-5, api_model: gpt-5-2025-08-07, base_url: {server.base_url}, "
              "stream: true, max_requests_per_s: 5, max_tokens: 32, "
              "extra_body: {chat_template_kwargs: {enable_thinking: false}}}")
    pool = build_pool(load_pool_config(_pool_yaml(tmp_path, server.base_url, expert)))
    box = Toolbox.of(pool.tools)

    async def three_calls():
        return [await box.call(ToolCall(id=f"c{i}", name="gpt5", arguments={"question": "2+3?"})) for i in range(3)]

    observations = asyncio.run(three_calls())
    assert [o.status for o in observations] == ["ok"] * 3, observations[0].content
    assert all(o.content == "5" and o.cost_usd > 0 for o in observations)
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 3
    assert set(bodies[0]) == {"model", "messages", "max_completion_tokens", "stream", "stream_options",
                              "chat_template_kwargs"}
    assert bodies[0]["model"] == "gpt-5-2025-08-07" and bodies[0]["stream"] is True
    assert bodies[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert bodies[0]["max_completion_tokens"] == 32
    span_s = server.requests[-1].time_s - server.requests[0].time_s
    assert span_s >= 0.35, span_s  # 5 requests/s: three calls are at least 0.4 s apart end to end (less jitter)


def test_explicit_reasoning_false_in_yaml(server, tmp_path: Path) -> None:
    expert = f"{{kind: openai, model: gpt-5, base_url: {server.base_url}, reasoning: false}}"
    pool = build_pool(load_pool_config(_pool_yaml(tmp_path, server.base_url, expert)))
    obs = asyncio.run(Toolbox.of(pool.tools).call(ToolCall(id="c", name="gpt5", arguments={"question": "q"})))
    assert obs.status == "tool_error" and "max_tokens" in obs.content  # the user's choice is honoured


def test_example_openai_pool_sends_reasoning_wire_to_gpt5() -> None:
    pool = build_pool(load_pool_config(ROOT / "examples/pool_openai.yaml"))
    backends = {t.name: t for t in pool.tools}
    assert set(backends) >= {"gpt5", "gpt5_mini"}
    assert pool.orchestrator.reasoning is False
    closures = [c.cell_contents for t in (backends["gpt5"], backends["gpt5_mini"]) for c in t.fn.__closure__]
    assert [b.reasoning for b in closures if isinstance(b, OpenAICompatBackend)] == [True, True]


@pytest.mark.parametrize(("endpoint", "message"), [
    ("{kind: bundled, stream: true}", "stream applies to kind 'openai' only"),
    ("{kind: bundled, api_model: x}", "api_model applies to kind 'openai' only"),
    ("{kind: openai, model: gpt-5, base_url: http://127.0.0.1:9/v1, extra_body: {model: x}}",
     "extra_body must not set model"),
    ("{kind: openai, model: gpt-5, base_url: http://127.0.0.1:9/v1, max_requests_per_s: 0}", "greater than 0"),
    ("{kind: openai, model: gpt-5, base_url: http://127.0.0.1:9/v1, reasoning: maybe}", "reasoning"),
])
def test_bad_endpoint_fields_are_one_config_error(tmp_path: Path, endpoint: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pool_config(_pool_yaml(tmp_path, "http://127.0.0.1:9/v1", endpoint))
