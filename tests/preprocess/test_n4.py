"""Tests of medpipe.preprocess.n4: N4 on a known synthetic field, on real XA30 data, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.errors import DataError
from medpipe.core.io import save_nifti
from medpipe.preprocess.n4 import foreground_mask, n4_correct

FAST = {"shrink_factor": 2, "convergence_iters": [30, 30, 30]}


def _biased_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    idx = np.indices((48, 48, 40)).astype(np.float64)
    r2 = ((idx[0] - 23.5) / 20) ** 2 + ((idx[1] - 23.5) / 20) ** 2 + ((idx[2] - 19.5) / 16) ** 2
    tissue = np.where(r2 < 1, 100.0, 0.0) + np.where(r2 < 0.4, 50.0, 0.0)
    field = np.exp(0.35 * (idx[0] - 23.5) / 24 - 0.25 * (idx[2] - 19.5) / 20)
    noisy = tissue * field + rng.normal(0, 1.0, tissue.shape) * (r2 < 1)
    return noisy.astype(np.float32), field, r2 < 1


def test_n4_recovers_synthetic_field_and_is_deterministic(tmp_path: Path) -> None:
    img, field, inside = _biased_phantom()
    save_nifti(img, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "in.nii.gz")
    runs = []
    for run in ("a", "b"):
        d = tmp_path / run
        n4_correct(
            tmp_path / "in.nii.gz",
            d / "n4.nii.gz",
            d / "field.nii.gz",
            d / "qc.png",
            subject="S1",
            settings=FAST,
            seed=2,
        )
        runs.append(d)
    for name in ("n4.nii.gz", "field.nii.gz", "n4.json", "field.json"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    est = nib.load(runs[0] / "field.nii.gz").get_fdata()
    r = np.corrcoef(np.log(est[inside]), np.log(field[inside]))[0, 1]
    assert r > 0.9, r
    corrected = nib.load(runs[0] / "n4.nii.gz").get_fdata()
    np.testing.assert_allclose(corrected, img / est, rtol=1e-5)
    side = json.loads((runs[0] / "n4.json").read_text())
    assert side["stage"] == "n4" and side["bias_field"] == "field.nii.gz"


def test_n4_refuses_nan_and_empty(tmp_path: Path) -> None:
    img, _, _ = _biased_phantom()
    img[1, 2, 3] = np.nan
    save_nifti(img, np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"subject S4.*nan.nii.gz.*NaN"):
        n4_correct(
            tmp_path / "nan.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "f.nii.gz",
            tmp_path / "q.png",
            subject="S4",
            settings=FAST,
            seed=1,
        )
    save_nifti(np.zeros((8, 8, 8), np.float32), np.eye(4), tmp_path / "zero.nii.gz")
    with pytest.raises(DataError, match="empty"):
        n4_correct(
            tmp_path / "zero.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "f.nii.gz",
            tmp_path / "q.png",
            subject="S4",
            settings=FAST,
            seed=1,
        )


@pytest.mark.shared
def test_n4_xa30_approaches_scanner_normalised(shared_dir: Path, tmp_path: Path) -> None:
    """Series 5 (raw, coil bias) corrected by N4 correlates more with series 6 (scanner-normalised)."""
    ref = shared_dir / "dcm_qa_xa30" / "Ref"
    raw_path = next(ref.glob("5_*.nii"))
    norm = np.asarray(nib.load(next(ref.glob("6_*.nii"))).dataobj, dtype=np.float64)
    raw = np.asarray(nib.load(raw_path).dataobj, dtype=np.float64)
    n4_correct(
        raw_path,
        tmp_path / "n4.nii.gz",
        tmp_path / "f.nii.gz",
        tmp_path / "q.png",
        subject="xa30",
        settings={},
        seed=1,
    )
    corrected = nib.load(tmp_path / "n4.nii.gz").get_fdata()
    head = foreground_mask(norm).astype(bool)
    r_raw = np.corrcoef(raw[head], norm[head])[0, 1]
    r_n4 = np.corrcoef(corrected[head], norm[head])[0, 1]
    print(f"XA30 inside head ({head.sum()} voxels): r(raw, s6) = {r_raw:.4f}, r(N4, s6) = {r_n4:.4f}")
    assert r_n4 > r_raw
