"""Shared pytest configuration: paths to the repository and to the shared data beside it."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = SHARED_DIR / "data"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: the repository must sit beside shared/")
    return path
