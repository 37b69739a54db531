"""The results store: one fsynced line per item, truncated tails (R3), config changes (R4), atomic results (R2)."""

import json
import os

import pytest

from orchestra.errors import ConfigError
from orchestra.evaluate.store import ResultStore, atomic_write_json, read_items


def rec(i, digest="h1", **extra):
    return {"id": f"t{i}#0", "task_id": f"t{i}", "trial": 0, "config_hash": digest, "solved": True, **extra}


def test_append_then_reopen_returns_done_items_and_refuses_duplicate_ids(tmp_path):
    with ResultStore(tmp_path) as store:
        assert store.open({"a": 1}, "h1") == {}
        assert store.append(rec(1))
        assert store.append(rec(2))
        assert not store.append(rec(1))  # already in: nothing written
    lines = (tmp_path / "items.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["t1#0", "t2#0"]
    with ResultStore(tmp_path) as store:
        done = store.open({"a": 1}, "h1")
        assert set(done) == {"t1#0", "t2#0"}
        assert not store.append(rec(2))
    assert json.loads((tmp_path / "config.json").read_text()) == {"config_hash": "h1", "config": {"a": 1}}


def test_truncated_last_line_is_skipped_and_cut_before_appending(tmp_path):  # R3
    path = tmp_path / "items.jsonl"
    whole = json.dumps(rec(1)) + "\n"
    path.write_text(whole + json.dumps(rec(2))[:25])
    assert [r["id"] for r in read_items(path)] == ["t1#0"]
    with ResultStore(tmp_path) as store:
        done = store.open({}, "h1")
        assert set(done) == {"t1#0"}
        assert path.read_text() == whole  # the half line is gone
        store.append(rec(2))
    assert [r["id"] for r in read_items(path)] == ["t1#0", "t2#0"]


def test_a_complete_record_without_its_newline_counts_and_gets_one(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(rec(1)))
    with ResultStore(tmp_path) as store:
        assert set(store.open({}, "h1")) == {"t1#0"}
        store.append(rec(2))
    assert [r["id"] for r in read_items(path)] == ["t1#0", "t2#0"]


def test_a_broken_line_before_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(rec(1)) + "\n{broken\n" + json.dumps(rec(2)) + "\n")
    with pytest.raises(ConfigError, match="broken"):
        read_items(path)


def test_other_settings_are_refused_unless_forced(tmp_path):  # R4
    with ResultStore(tmp_path) as store:
        store.open({"spec": "a"}, "h1")
        store.append(rec(1))
    with pytest.raises(ConfigError, match=r"other inputs \(changed: spec;"), ResultStore(tmp_path) as store:
        store.open({"spec": "b"}, "h2")
    assert len(read_items(tmp_path / "items.jsonl")) == 1  # nothing lost by the refusal
    with ResultStore(tmp_path) as store:
        assert store.open({"spec": "b"}, "h2", force=True) == {}
        store.append(rec(1, "h2"))
        with pytest.raises(ValueError, match="config_hash"):
            store.append(rec(3, "h1"))
    assert [r["config_hash"] for r in read_items(tmp_path / "items.jsonl")] == ["h2"]
    assert [r["config_hash"] for r in read_items(tmp_path / "items.h1.jsonl.bak")] == ["h1"]


def test_one_writer_per_folder(tmp_path):
    with ResultStore(tmp_path) as first:
        first.open({}, "h1")
        with pytest.raises(ConfigError, match="another evaluation"):
            ResultStore(tmp_path).open({}, "h1")
    with ResultStore(tmp_path) as again:  # released on close
        again.open({}, "h1")


def test_crash_between_write_and_rename_leaves_the_old_results(tmp_path, monkeypatch):  # R2
    path = tmp_path / "results.json"
    atomic_write_json(path, {"accuracy": 0.5})

    def crash(*args):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_json(path, {"accuracy": 0.9})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
