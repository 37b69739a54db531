"""`orchestra serve-model`: a local transformers model over real HTTP on 127.0.0.1, reached through the project's
OpenAI-compatible backend and the official `openai` client.

In-process cases run the app under uvicorn in a thread with a forced tiny model (it writes exactly the hermes text a
test needs), so the tool-call path is checked end to end; the subprocess case runs the command itself with the random
tiny model and checks batching across concurrent requests and the returned token ids.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx2 as httpx
import openai
import pytest
import uvicorn

from orchestra.backends.local import LocalBackend
from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.rollout.episode import run_episode
from orchestra.serve.auth import KeyRing
from orchestra.serve.model_server import create_model_app
from orchestra.task import Task
from orchestra.tools.spec import tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Termination
from tests.forced_model import ForcedLM
from tests.test_serve import free_port, start_serve_command


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first number
        b: second number
    """
    return a + b


def char_ids(tok, text: str) -> list[int]:
    return [tok.encode(ch, add_special_tokens=False)[0] for ch in text]


def hermes_ids(tok, body: str) -> list[int]:
    return [tok.convert_tokens_to_ids("<tool_call>"), *char_ids(tok, body), tok.convert_tokens_to_ids("</tool_call>")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


class InProcess:
    """The model server app under uvicorn in a background thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def forced_server(tok, scripts: list[list[int]], calls: str = "hermes") -> InProcess:
    end = tok.convert_tokens_to_ids("<|im_end|>")
    backend = LocalBackend(ForcedLM(tiny_model(tok), scripts, end), tok, name="tiny", calls=calls)
    return InProcess(create_model_app(backend, KeyRing({})))


async def test_an_episode_over_http_reads_the_models_hermes_call_and_answers(tok) -> None:
    call = hermes_ids(tok, '\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n')
    with forced_server(tok, [call, char_ids(tok, "It is 3.")]) as server:
        async with OpenAICompatBackend("tiny", server.base_url, price=ModelPrice(0.0, 0.0), max_attempts=1) as remote:
            trajectory = await run_episode(Task("t", "What is 1 + 2?"), remote, Toolbox.of([tool(add)]))
    assert trajectory.termination is Termination.FINAL_MESSAGE and trajectory.final_answer == "It is 3."
    (observation,) = trajectory.observations
    assert (observation.name, observation.content, observation.status) == ("add", "3", "ok")
    assert trajectory.turns[0].completion.usage.output_tokens == len(call) + 1  # the end token is billed too


async def test_a_compact_call_model_is_served_as_openai_tool_calls_and_a_bad_line_is_a_format_error(tok) -> None:
    calls = char_ids(tok, "add(a=1, b=2)\nadd(a=3, b=4)")
    with forced_server(tok, [calls, char_ids(tok, "add(1, 2)"), char_ids(tok, "It is 3.")], "compact") as server:
        async with OpenAICompatBackend("tiny", server.base_url, price=ModelPrice(0.0, 0.0), max_attempts=1) as remote:
            trajectory = await run_episode(Task("t", "What is 1 + 2?"), remote, Toolbox.of([tool(add)]))
    first, second = trajectory.turns[0].observations, trajectory.turns[1].observations
    assert [(o.name, o.content, o.status) for o in first] == [("add", "3", "ok"), ("add", "7", "ok")]
    assert trajectory.format_errors == 1 and second[0].status != "ok"
    assert trajectory.final_answer == "It is 3."


def test_openai_client_gets_structured_tool_calls_token_ids_and_a_stream(tok) -> None:
    call = hermes_ids(tok, '{"name": "add", "arguments": {"a": 4, "b": 5}}')
    with forced_server(tok, [call, call]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        tools = [tool(add).spec.to_openai()]
        response = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "4 + 5?"}],
                                                  tools=tools, temperature=0, extra_body={"return_token_ids": True})
        choice = response.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls[0].function.name == "add"
        assert choice.token_ids[:-1] == call and len(choice.token_logprobs) == len(choice.token_ids)
        assert len(response.prompt_token_ids) == response.usage.prompt_tokens
        chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "again"}],
                                                     tools=tools, temperature=0, stream=True))
        deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        assert deltas and deltas[0][0].function.arguments == '{"a": 4, "b": 5}'


async def test_a_malformed_call_reaches_the_episode_as_a_format_error(tok) -> None:
    broken = hermes_ids(tok, '{"name": "add", "arguments": {"a": 1,')  # truncated JSON
    with forced_server(tok, [broken, char_ids(tok, "sorry")]) as server:
        async with OpenAICompatBackend("tiny", server.base_url, price=ModelPrice(0.0, 0.0), max_attempts=1) as remote:
            trajectory = await run_episode(Task("t", "1 + 2?"), remote, Toolbox.of([tool(add)]))
    assert [o.status for o in trajectory.observations] == ["format_error"]
    assert trajectory.final_answer == "sorry"


def test_bad_requests_get_the_openai_error_shape(tok) -> None:
    with forced_server(tok, [char_ids(tok, "x")]) as server, httpx.Client(base_url=server.base_url) as http:
        for response, status, code in (
            (http.post("/chat/completions", content=b"{nope"), 400, "invalid_json"),
            (http.post("/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
             404, "model_not_found"),
            (http.post("/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                  "top_p": 0}), 400, "invalid_value"),
        ):
            assert response.status_code == status and response.json()["error"]["code"] == code
        assert http.get("/models").json()["data"][0]["id"] == "tiny"


def test_concurrent_requests_share_model_batches_and_return_their_token_ids(tok) -> None:
    backend = LocalBackend(tiny_model(tok), tok, name="tiny", batch_wait_s=0.2)
    with InProcess(create_model_app(backend, KeyRing({}))) as server:
        responses = asyncio.run(_burst(server.base_url, 8))
        stats = httpx.get(f"{server.base_url}/stats").json()
    assert all(len(r.choices[0].token_ids) == r.usage.completion_tokens for r in responses)
    assert stats["rows"] == 8 and stats["generate_calls"] < 8  # requests shared model batches


def test_a_checkpoint_folder_is_served_under_the_name_its_orchestra_json_gives(tok, tmp_path) -> None:
    import json

    from orchestra.errors import ConfigError
    from orchestra.serve.model_server import load_model

    folder = tmp_path / "trained"
    tiny_model(tok, seed=3).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert load_model(str(folder)).model == "trained"
    (folder / "orchestra.json").write_text(json.dumps({"model": "my-orchestrator", "render_tools": False}))
    backend = load_model(str(folder))
    assert backend.model == "my-orchestrator" and not backend.chat_format.render_tools
    with pytest.raises(ConfigError, match="not `tiny`, `bundled`"):
        load_model(str(tmp_path / "nowhere"))


@pytest.mark.slow  # a fresh process imports torch and transformers: ~15-25 s on 2 busy cores
def test_the_command_serves_the_tiny_model(tmp_path) -> None:
    served = start_serve_command(tmp_path, ["serve-model", "--model", "tiny", "--batch-wait-s", "0.2"])
    try:
        responses = asyncio.run(_burst(served.base_url, 4))
        assert all(r.model == "tiny" and r.choices[0].token_ids for r in responses)
        assert httpx.get(f"{served.base_url}/stats").json()["rows"] == 4
    finally:
        served.stop()


async def _burst(base_url: str, count: int) -> list:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
    async with client:
        return await asyncio.gather(*(client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=6, temperature=0,
            extra_body={"return_token_ids": True}) for i in range(count)))


@pytest.mark.integration
def test_smollm2_behind_serve_model_orchestrates_behind_serve(tmp_path) -> None:
    """The whole stack over real HTTP: the openai client -> orchestra serve -> serve-model -> SmolLM2-135M."""
    import yaml

    from tests.test_serve import start_serve

    model = start_serve_command(tmp_path, ["serve-model", "--model", "bundled"])
    try:
        pool = tmp_path / "pool.yaml"
        pool.write_text(yaml.safe_dump({
            "orchestrator": {"kind": "openai", "model": "smollm2-135m-instruct", "base_url": model.base_url,
                             "max_tokens": 48, "timeout_s": 300, "max_attempts": 1},
            "tools": [{"builtin": "calculator"}], "limits": {"max_turns": 2}}))
        served = start_serve(tmp_path, pool)
        try:
            response = served.client(key=None, timeout=600).chat.completions.create(
                model="orchestra", messages=[{"role": "user", "content": "What is 17 * 23?"}])
        finally:
            served.stop()
        assert response.orchestra["termination"] in ("final_message", "max_turns", "answered")
        assert response.usage.turns >= 1 and response.usage.prompt_tokens > 100  # the real tokenizer counted them
        assert httpx.get(f"{model.base_url}/stats").json()["rows"] == response.usage.turns
    finally:
        model.stop()
