"""OpenAICompatBackend against the scripted OpenAI-compatible server over real HTTP on 127.0.0.1: requests, streams
and episodes; prices and secrets.

Ids refer to docs RELIABILITY.md: F11 price table, K1 planted key, K2 Authorization header. The fault tests (F1-F9)
are in test_openai_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import traceback
from importlib import resources

import pytest
import yaml

from orchestra.backends.base import ChatBackend, Sampling, estimate_prompt_tokens
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice, PriceTable
from orchestra.errors import BackendError, ConfigError
from orchestra.preferences import Limits
from orchestra.rollout.budget import Budget
from orchestra.tools.spec import ToolSpec
from orchestra.types import Termination, Usage
from tests import openai_kit
from tests.openai_kit import ADD, ASK, FAST, PRICE, _dump, _episode
from tests.servers.scripted_openai import (
    Fault,
    Reply,
    always,
    tool_then_answer,
)

server, make = openai_kit.server, openai_kit.make  # the kit's fixtures, used by name

# ---- the happy paths ------------------------------------------------------------------------------------------


async def test_structured_tool_calls_and_request_shape(server, make):
    server.handler = tool_then_answer("add", {"a": 2, "b": 3}, usage=(40, 7))
    backend = make(server.base_url)
    assert isinstance(backend, ChatBackend)
    completion = await backend.complete(ASK, [ADD.spec], Sampling(max_tokens=64, seed=3, stop=("END",)))
    (call,) = completion.tool_calls
    assert (call.name, call.arguments, call.error) == ("add", {"a": 2, "b": 3}, None)
    assert completion.usage == Usage(40, 7)
    assert completion.cost_usd == pytest.approx((40 * 1.0 + 7 * 2.0) / 1e6, abs=1e-12)
    assert completion.finish_reason == "tool_calls" and completion.model == "m" and completion.latency_s > 0
    (seen,) = server.requests
    assert seen.body["model"] == "m" and seen.body["max_tokens"] == 64 and seen.body["seed"] == 3
    assert seen.body["stop"] == ["END"] and seen.body["messages"] == [m.to_openai() for m in ASK]
    assert seen.body["tools"] == [ADD.spec.to_openai()]
    assert "authorization" not in seen.headers and "stream" not in seen.body


async def test_stream_accumulates_text_tool_calls_and_usage(server, make):
    backend = make(server.base_url, stream=True)
    server.handler = tool_then_answer("add", {"a": 2, "b": 3}, usage=(30, 9))
    completion = await backend.complete(ASK, [ADD.spec], Sampling())
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert completion.usage == Usage(30, 9)
    server.handler = always(Reply(content="a streamed answer in several pieces", usage=(12, 6)))
    completion = await backend.complete(ASK, [], Sampling())
    assert completion.text == "a streamed answer in several pieces" and completion.finish_reason == "stop"
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_hermes_blocks_in_content_are_parsed_as_a_fallback(server, make):
    server.handler = tool_then_answer("add", {"a": 1, "b": 1}, hermes=True)
    completion = await make(server.base_url).complete(ASK, [ADD.spec], Sampling())
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("add", {"a": 1, "b": 1})]
    assert "<tool_call>" not in completion.text


@pytest.mark.parametrize("stream", [False, True])
async def test_multi_turn_episode_through_the_backend(server, make, stream):
    server.handler = tool_then_answer("add", {"a": 2, "b": 3}, answer="The answer is 5.", usage=(100, 20))
    backend = make(server.base_url, stream=stream)
    trajectory = await _episode(backend)
    assert trajectory.termination is Termination.FINAL_MESSAGE
    assert trajectory.final_answer == "The answer is 5."
    assert len(trajectory.turns) == 2 and trajectory.observations[0].content == "5"
    assert trajectory.cost_usd == pytest.approx(2 * (100 * 1.0 + 20 * 2.0) / 1e6, abs=1e-12)
    first, second = server.requests
    assert first.body["tools"][0]["function"]["name"] == "add"
    assistant, tool_message = second.messages[-2:]
    call_id = assistant["tool_calls"][0]["id"]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == call_id and "5" in tool_message["content"]


async def test_backend_survives_a_new_event_loop(server):
    backend = OpenAICompatBackend("m", server.base_url, price=PRICE, **FAST)
    for _ in range(2):  # each run gets its own loop; the backend must not reuse the dead loop's connections
        completion = await asyncio.to_thread(asyncio.run, backend.complete(ASK, [], Sampling()))
        assert completion.text == "ok"


# ---- F11: prices ------------------------------------------------------------------------------------------------


async def test_f11_every_priced_model_costs_exactly_the_table_price(server, make):
    raw = yaml.safe_load(resources.files("orchestra").joinpath("data/prices.yaml").read_text())["models"]
    table = PriceTable.default()
    assert set(raw) == set(table.models) and raw
    server.handler = always(Reply(content="priced", usage=(1234, 5678)))
    for name, entry in raw.items():
        for stream in (False, True):
            backend = OpenAICompatBackend.from_price_table(name, server.base_url, table, stream=stream, **FAST)
            completion = await backend.complete(ASK, [], Sampling())
            expected = (1234 * float(entry["input"]) + 5678 * float(entry["output"])) / 1e6
            assert abs(completion.cost_usd - expected) <= 1e-9, name
            await backend.aclose()
    with pytest.raises(ConfigError, match="no price"):
        OpenAICompatBackend.from_price_table("mystery-model", server.base_url, table)


def test_max_cost_is_prompt_estimate_times_input_plus_max_tokens_times_output():
    backend = OpenAICompatBackend("m", "http://127.0.0.1:9/v1", price=ModelPrice(3.0, 15.0))
    sampling = Sampling(max_tokens=700)
    expected = (estimate_prompt_tokens(ASK, [ADD.spec]) * 3.0 + 700 * 15.0) / 1e6
    assert backend.max_cost_usd(ASK, [ADD.spec], sampling) == pytest.approx(expected, abs=1e-12)


# ---- K1, K2: secrets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_name,key", [
    ("ORCH_FAKE_OPENAI_API_KEY", "sk-proj-" + secrets.token_urlsafe(32)),
    ("ORCH_FAKE_CREDENTIAL", "zq" + secrets.token_hex(20)),  # a name and shape the generic rules do not know
], ids=["sk-key", "unknown-shape"])
async def test_k2_echoed_authorization_header_is_redacted(server, make, monkeypatch, caplog, env_name, key):
    monkeypatch.setenv(env_name, key)
    backend = make(server.base_url, api_key_env=env_name, max_attempts=2)
    for status in (401, 503):
        server.handler = always(Fault("status", status=status, echo_headers=True))
        with caplog.at_level(logging.DEBUG), pytest.raises(BackendError) as info:
            await backend.complete(ASK, [], Sampling())
        text = "".join(traceback.format_exception(info.value))
        assert "Bearer ***" in str(info.value) and key not in text
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"  # the key was really sent
    assert "Bearer ***" in caplog.text and key not in caplog.text


async def test_k1_planted_key_never_reaches_completion_trajectory_logs_or_errors(server, make, monkeypatch, caplog):
    key = "sk-live-" + secrets.token_urlsafe(40)
    monkeypatch.setenv("ORCH_PLANTED_API_KEY", key)

    def leaky(request):  # a hostile server echoing the credential into everything it writes
        auth = request.headers.get("authorization", "")
        if any(m.get("role") == "tool" for m in request.messages):
            return Reply(content=f"final, and your header was {auth}")
        call = {"id": "c1", "type": "function",
                "function": {"name": "add", "arguments": json.dumps({"a": 1, "b": 2, "note": auth})}}
        return Reply(content=f"calling with {auth}", tool_calls=(call,))

    server.handler = leaky
    backend = make(server.base_url, api_key_env="ORCH_PLANTED_API_KEY")
    with caplog.at_level(logging.DEBUG):
        completion = await backend.complete(ASK, [ADD.spec], Sampling())
        trajectory = await _episode(backend)
        server.handler = always(Fault("status", status=500, echo_headers=True))
        failed = await _episode(backend)
        with pytest.raises(BackendError) as info:
            await backend.complete(ASK, [], Sampling())
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"
    assert trajectory.termination is Termination.FINAL_MESSAGE and failed.termination is Termination.ERROR
    leaks = [repr(completion), _dump(trajectory), _dump(failed), caplog.text, repr(backend), str(vars(backend)),
             "".join(traceback.format_exception(info.value))]
    assert all(key not in text for text in leaks)
    assert "***" in completion.text and "***" in trajectory.final_answer


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "localhost:8000", "ftp://host/v1", "http://"])
def test_a_base_url_without_an_http_scheme_is_a_config_error_not_a_transient_failure(url):
    with pytest.raises(ConfigError, match="absolute http"):
        OpenAICompatBackend("m", url, price=PRICE)


def test_api_key_env_must_be_a_name_and_must_be_set(monkeypatch):
    pasted = "sk-proj-" + "a" * 40
    with pytest.raises(ConfigError) as info:
        OpenAICompatBackend("m", "http://127.0.0.1:9/v1", price=PRICE, api_key_env=pasted)
    assert pasted not in str(info.value)
    monkeypatch.delenv("ORCH_UNSET_KEY", raising=False)
    backend = OpenAICompatBackend("m", "http://u:pw@127.0.0.1:9/v1", price=PRICE, api_key_env="ORCH_UNSET_KEY")
    with pytest.raises(ConfigError, match="ORCH_UNSET_KEY is not set"):
        asyncio.run(backend.complete(ASK, [], Sampling()))
    assert "pw" not in repr(backend) and "ORCH_UNSET_KEY" in repr(backend)


async def test_tool_spec_round_trip_matches_what_the_server_saw(server, make):
    spec = ToolSpec.from_openai(ADD.spec.to_openai())
    await make(server.base_url).complete(ASK, [spec], Sampling())
    assert server.requests[0].body["tools"][0]["function"]["parameters"] == ADD.spec.parameters


async def test_episode_budget_reserves_the_worst_case_and_settles_the_real_cost(server, make):
    server.handler = always(Reply(content="done", usage=(10, 5)))
    budget = Budget(1.0)
    trajectory = await _episode(make(server.base_url), budget=budget, limits=Limits(max_turns=2))
    assert trajectory.termination is Termination.FINAL_MESSAGE
    assert budget.spent_usd == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6) and budget.reserved_usd == 0.0
