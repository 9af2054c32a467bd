"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import S0_FIXTURE


@pytest.fixture(scope="session")
def s0_fixture() -> Path:
    if not (S0_FIXTURE / "eformer_s0_random.pth").is_file():
        pytest.fail(f"reference fixture missing: {S0_FIXTURE} (tests/data is part of the repository)")
    return S0_FIXTURE


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The search tests' tiny supernet and LUT (tests/search_assets.py), built once per module that asks for it."""
    from search_assets import build_search_assets

    return build_search_assets(tmp_path_factory)
