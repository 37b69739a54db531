"""Secret redaction (RELIABILITY K1, K2): table tests, idempotency, environment values, the logging filter."""

from __future__ import annotations

import logging
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.redact import RedactingFilter, install_redaction, redact, redact_headers, secret_env_values

KEY = "sk-proj-" + "Ab3" * 12


@pytest.mark.parametrize("text,expected", [
    (f"Authorization: Bearer {KEY}", "Authorization: Bearer ***"),
    ("authorization: bearer abc.def-ghi_jkl", "authorization: bearer ***"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
    (f"failed with key {KEY} at call", "failed with key *** at call"),
    ("anthropic sk-ant-api03-abcdefghijklmnopqrstuv", "anthropic ***"),
    ('{"api_key": "abcdefgh12345678", "model": "gpt-5"}', '{"api_key": "***", "model": "gpt-5"}'),
    ("x-api-key: 0123456789abcdef", "x-api-key: ***"),
    ("https://user:hunter22@proxy.local:8080/v1", "https://***@proxy.local:8080/v1"),
    ("token hf_ABCDEFGHIJKLMNOPQRSTuvwx here", "token *** here"),
    ("ghp_0123456789abcdefghijABCDEFGHIJ", "***"),
    ("nvapi-abcdefghijklmnop_qrstu", "***"),
    ("AKIAIOSFODNN7EXAMPLE", "***"),
])
def test_credentials_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "Basic tools are cheap; prefer local search.",
    "max_tokens: 512, prompt_tokens: 1234",
    "The Bearer of bad news",
    "skeleton sk-short",
    "https://example.com/v1/chat/completions",
    "",
])
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_values_of_secret_named_environment_variables_are_masked(monkeypatch):
    value = "zq" + secrets.token_hex(16)  # no known key shape: only the environment rule can catch it
    monkeypatch.setenv("ORCH_TEST_SERVICE_TOKEN", value)
    monkeypatch.setenv("ORCH_TEST_DB_PASSWORD", "correct horse battery")
    monkeypatch.setenv("ORCH_TEST_SHORT_KEY", "1")  # too short to redact without wrecking text
    monkeypatch.setenv("ORCH_TEST_PLAIN", "zq-not-a-secret-name-0000")
    assert value in secret_env_values() and "1" not in secret_env_values()
    out = redact(f"got {value}; pw=correct horse battery; n=1; zq-not-a-secret-name-0000")
    assert value not in out and "correct horse battery" not in out
    assert "n=1" in out and "zq-not-a-secret-name-0000" in out


def test_extra_secrets_are_masked_whatever_their_shape():
    assert redact("echo: qqq-secret-9", extra_secrets=("qqq-secret-9",)) == "echo: ***"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_redaction_is_idempotent_and_never_raises(text):
    once = redact(text)
    assert redact(once) == once


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=20, max_size=60))
def test_any_bearer_token_is_masked(token):
    assert token not in redact(f"Authorization: Bearer {token}")


def test_headers_are_masked_by_name():
    out = redact_headers({"Authorization": f"Bearer {KEY}", "X-Api-Key": "abc", "Content-Type": "application/json"})
    assert out == {"Authorization": "Bearer ***", "X-Api-Key": "***", "Content-Type": "application/json"}


def test_logging_filter_masks_messages_arguments_and_tracebacks(caplog):
    logger = logging.getLogger("orchestra.test_redact")
    flt = RedactingFilter()
    caplog.handler.addFilter(flt)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("request headers %s", {"Authorization": f"Bearer {KEY}"})
            try:
                raise RuntimeError(f"upstream said: Authorization: Bearer {KEY}")
            except RuntimeError:
                logger.exception("call failed")
    finally:
        caplog.handler.removeFilter(flt)
    assert KEY not in caplog.text
    assert caplog.text.count("Bearer ***") == 2 and "RuntimeError" in caplog.text


def test_install_redaction_attaches_one_filter_per_handler():
    handler = logging.StreamHandler()
    install_redaction(handler)
    install_redaction(handler)
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1


ANSWER = "The expression evaluates exactly to 395; EMPTY fields were skipped."


@pytest.mark.parametrize("key", ["x", "EMPTY", "sk-no-key-required", "1234567"])
def test_k3_short_or_placeholder_keys_never_corrupt_text(monkeypatch, key):
    monkeypatch.setenv("ORCH_TEST_LOCAL_API_KEY", key)
    assert redact(ANSWER) == ANSWER and redact(ANSWER, extra_secrets=(key,)) == ANSWER
    assert key not in secret_env_values()


def test_k3_a_real_length_key_is_still_masked_in_extra_secrets():
    key = "zq" + secrets.token_hex(12)
    assert redact(f"echo {key}", extra_secrets=(key,)) == "echo ***"


@pytest.mark.parametrize("key", ["x", "EMPTY"])
async def test_k3_answers_through_the_http_backend_stay_intact_with_a_dummy_key(monkeypatch, key):
    """vLLM's customary `EMPTY` (or `x`) as the key: the answer, the trajectory and the error text are untouched."""
    from orchestra.backends.base import Sampling
    from orchestra.backends.openai_compat import OpenAICompatBackend
    from orchestra.backends.pricing import ModelPrice
    from orchestra.rollout.episode import run_episode
    from orchestra.task import Task
    from orchestra.tools.toolbox import Toolbox
    from orchestra.types import Message
    from tests.servers.scripted_openai import Reply, ScriptedOpenAIServer, always

    monkeypatch.setenv("ORCH_TEST_VLLM_KEY", key)
    with ScriptedOpenAIServer(always(Reply(content=ANSWER))) as server:
        backend = OpenAICompatBackend("m", server.base_url, price=ModelPrice(0.0, 0.0), api_key_env="ORCH_TEST_VLLM_KEY")
        completion = await backend.complete([Message("user", "17 * 23 + 4 exactly?")], [], Sampling())
        trajectory = await run_episode(Task("t", "exactly?"), backend, Toolbox.of([]))
        await backend.aclose()
        assert server.requests[0].headers["authorization"] == f"Bearer {key}"
    assert completion.text == ANSWER
    assert trajectory.final_answer == ANSWER and "***" not in repr(trajectory)
