"""Tests of medpipe.core.determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medpipe.core.determinism import ITK_THREADS_VAR, export_job_environment, itk_single_threaded, seed_everything


def test_export_job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ITK_THREADS_VAR, raising=False)
    assert export_job_environment(False) == {}
    assert not itk_single_threaded()
    assert export_job_environment(True) == {ITK_THREADS_VAR: "1", "PYTHONHASHSEED": "0"}
    assert itk_single_threaded()


def test_seed_everything_repeats_random_streams() -> None:
    seed_everything(123, deterministic=False)
    a = (np.random.rand(3), torch.rand(3))
    seed_everything(123, deterministic=False)
    b = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    seed_everything(124, deterministic=False)
    assert not np.array_equal(np.random.rand(3), a[0])
