"""Shared fixtures: the shared data folder (tests that need it skip with a clear reason when it is absent)."""

from __future__ import annotations

import pytest

from orchestra.paths import shared_data


@pytest.fixture(scope="session")
def data_dir():
    path = shared_data()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set ORCHESTRA_DATA)")
    return path
