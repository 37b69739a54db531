"""A τ² domain folder rewritten in the same process is read again, not served from the loader's cache.

Synthesis writes a folder, checks it, rewrites it and checks it again under the same path: each check must see the
files as they are now. Unchanged folders still share one load (the base tables are shared by every environment).
"""

from __future__ import annotations

import json
import shutil

from orchestra.envs.tau.env import TauEnvironment
from orchestra.paths import shared_data


def _copy_mock(tmp_path):
    folder = tmp_path / "mock"
    shutil.copytree(shared_data() / "tau2" / "mock", folder)
    for file in folder.iterdir():
        file.chmod(0o644)  # the shared data is read-only; this copy is rewritten below
    return folder


def test_a_rewritten_folder_is_loaded_again(tmp_path):
    folder = _copy_mock(tmp_path)
    first = TauEnvironment("mock", path=folder)
    tasks = json.loads((folder / "tasks.json").read_text())
    assert len(first.specs) == len(tasks) > 1
    (folder / "tasks.json").write_text(json.dumps(tasks[:1]))
    (folder / "policy.md").write_text("Rewritten policy.\n")
    db = json.loads((folder / "db.json").read_text())
    table = next(iter(db))
    db[table] = {}  # same keys, emptied table: a different size, and different records
    (folder / "db.json").write_text(json.dumps(db))

    second = TauEnvironment("mock", path=folder)
    assert list(second.specs) == [str(tasks[0]["id"])]
    assert second.policy.startswith("Rewritten policy.")
    assert second._base[table] == {} and first._base[table] != {}
    assert first.policy != second.policy and len(first.specs) == len(tasks)  # the first env keeps what it loaded


def test_a_same_size_rewrite_is_loaded_again(tmp_path):
    """A rewrite that keeps every file's size (and may keep its mtime tick) is still seen: the key is the content."""
    folder = _copy_mock(tmp_path)
    policy = (folder / "policy.md").read_text()
    first = TauEnvironment("mock", path=folder)
    swapped = policy.swapcase()
    assert len(swapped.encode()) == len(policy.encode()) and swapped != policy
    (folder / "policy.md").write_text(swapped)
    assert TauEnvironment("mock", path=folder).policy.startswith(swapped) and first.policy.startswith(policy)


def test_an_unchanged_folder_shares_one_load(tmp_path):
    folder = _copy_mock(tmp_path)
    a, b = TauEnvironment("mock", path=folder), TauEnvironment("mock", path=folder)
    assert a._base is b._base  # one load, shared base tables
