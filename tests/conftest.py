"""Shared fixtures: the shared data folder. Tests that need it skip with a clear reason when it is absent, except
in CI (`CI` set), where a missing folder is a failure: CI must run them."""

from __future__ import annotations

import os

import pytest

from orchestra.paths import shared_data


@pytest.fixture(scope="session")
def data_dir():
    path = shared_data()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder not found at {path}: CI must run the data tests (set ORCHESTRA_DATA)")
        pytest.skip(f"shared data folder not found at {path} (set ORCHESTRA_DATA)")
    return path
