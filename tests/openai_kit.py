"""What the OpenAICompatBackend tests share: a scripted server per test, backends closed at teardown, a tool."""

from __future__ import annotations

import dataclasses
import json

import pytest

from orchestra.backends.openai_compat import OpenAICompatBackend
from orchestra.backends.pricing import ModelPrice
from orchestra.rollout.episode import run_episode
from orchestra.task import Task
from orchestra.tools.spec import tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Message
from tests.servers.scripted_openai import (
    ScriptedOpenAIServer,
)

PRICE = ModelPrice(1.0, 2.0)
FAST = dict(timeout_s=2.0, max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.04)
ASK = [Message("user", "What is 2 + 3?")]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD = tool(add)


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as srv:
        yield srv


@pytest.fixture
async def make():
    """Backends built by the test, closed at teardown."""
    built: list[OpenAICompatBackend] = []

    def factory(base_url: str, **kwargs) -> OpenAICompatBackend:
        options = {"price": PRICE, **FAST, **kwargs}
        backend = OpenAICompatBackend(options.pop("model", "m"), base_url, **options)
        built.append(backend)
        return backend

    yield factory
    for backend in built:
        await backend.aclose()


def _episode(backend, **kwargs):
    return run_episode(Task("t1", "What is 2 + 3?"), backend, Toolbox.of([ADD]), **kwargs)


def _dump(trajectory) -> str:
    return json.dumps(dataclasses.asdict(trajectory), default=str)
