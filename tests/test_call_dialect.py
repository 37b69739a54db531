"""The tool-call dialect a trained orchestrator writes travels with it: environment -> training -> its folder ->
evaluation and serving; a mismatch is refused at load, naming the field."""

from __future__ import annotations

import json

import pytest

from orchestra.backends.local import LocalBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.errors import ConfigError
from orchestra.train.config import ModelSource, SFTConfig
from orchestra.train.mixture import load_mixture as load_entries
from orchestra.train.sft import speak, trained_meta
from tests.envs import routerbench_head


@pytest.fixture(scope="module")
def data(data_dir, tmp_path_factory):
    return str(routerbench_head(data_dir, tmp_path_factory.mktemp("routerbench"), 30))


def load_mixture(envs):
    return load_entries(SFTConfig.model_validate({"envs": envs}).envs)


def backend():
    tok = tiny_tokenizer()
    return LocalBackend(tiny_model(tok, seed=0), tok, render_tools=False)


def test_routerbench_trains_compact_calls_unless_told_hermes_and_the_folder_records_it(data):
    compact = load_mixture([{"name": "routerbench", "data": data}])
    hermes = load_mixture([{"name": "routerbench", "data": data, "calls": "hermes"}])
    assert compact[0].suite.calls == "compact" and compact[0].suite.turn_tokens < hermes[0].suite.turn_tokens
    assert trained_meta(compact, "sft").calls == "compact" and trained_meta(hermes, "sft").calls == "hermes"
    assert speak(backend(), compact).chat_format.calls == "compact"
    with pytest.raises(ConfigError, match="different dialects"):
        trained_meta([*compact, *hermes], "sft")


def test_a_folder_trained_on_one_dialect_is_refused_for_an_environment_of_another(data, tmp_path):
    (tmp_path / "orchestra.json").write_text(json.dumps({"prompt": "routerbench/compact", "calls": "hermes"}))
    mixture = load_mixture([{"name": "routerbench", "data": data}])
    with pytest.raises(ConfigError, match=r"model.path: .* trained to write hermes tool calls.*calls: hermes"):
        speak(backend(), mixture, ModelSource(kind="local", path=str(tmp_path)))
    (tmp_path / "orchestra.json").write_text(json.dumps({"prompt": "routerbench/compact"}))  # older folders: hermes
    with pytest.raises(ConfigError, match="trained to write hermes"):
        speak(backend(), mixture, ModelSource(kind="local", path=str(tmp_path)))


def test_bad_dialect_settings_fail_at_load():
    tok = tiny_tokenizer()
    with pytest.raises(ConfigError, match="first_call: required writes a hermes call"):
        LocalBackend(tiny_model(tok, seed=0), tok, first_call="required", calls="compact")
    with pytest.raises(ConfigError, match="calls: 'json' is not one of hermes, compact"):
        LocalBackend(tiny_model(tok, seed=0), tok, calls="json")
    with pytest.raises(Exception, match="calls"):
        load_mixture([{"name": "routerbench", "calls": "json"}])
