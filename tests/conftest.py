"""Shared fixtures.

``shared_dir`` locates the real reference data (``../shared`` or ``$MEDPIPE_SHARED``). In CI
(``CI=true``) missing data is an error; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("MEDPIPE_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Root of the real reference data (its ``data/`` folder)."""
    root = _shared_root()
    data = root / "data"
    if not data.is_dir():
        msg = f"reference data not found at {data} (set MEDPIPE_SHARED to the folder holding data/)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; in CI these tests must run")
        pytest.skip(msg)
    return data


@pytest.fixture(autouse=True)
def _single_thread_itk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ITK/ANTs single-threaded in tests: deterministic and fair on 2-core CI machines."""
    var = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
    monkeypatch.setenv(var, os.environ.get(var, "1"))
