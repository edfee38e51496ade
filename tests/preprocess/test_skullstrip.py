"""Tests of medpipe.preprocess.skullstrip: deepbet on real heads (Colin27, ITK KmeansTest), method none, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medpipe.preprocess.skullstrip as skullstrip
from medpipe.core.errors import DataError, MedpipeError
from medpipe.core.io import save_nifti


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.mark.shared
@pytest.mark.parametrize(
    ("image", "reference", "minimum"),
    [
        ("colin27/ch2.nii.gz", "colin27/ch2bet.nii.gz", 0.95),
        ("itk_kmeans/KmeansTest_T1UCharRaw.nii.gz", "itk_kmeans/KmeansTest_T1RawSkullStrip.nii.gz", 0.90),
    ],
)
def test_deepbet_matches_reference_brain(
    shared_dir: Path, tmp_path: Path, image: str, reference: str, minimum: float
) -> None:
    out = skullstrip.skull_strip(
        shared_dir / image,
        tmp_path / "mask.nii.gz",
        tmp_path / "qc.png",
        subject="ref",
        settings={"method": "deepbet"},
    )
    mask_img = nib.load(out)
    ref_img = nib.load(shared_dir / reference)
    assert np.allclose(mask_img.affine, nib.load(shared_dir / image).affine)
    dice = _dice(np.asarray(mask_img.dataobj) > 0, np.asarray(ref_img.dataobj) > 0)
    print(f"{image}: Dice {dice:.4f}")
    assert dice >= minimum
    side = json.loads((tmp_path / "mask.json").read_text())
    assert side["stage"] == "skullstrip" and side["volume_ml"] > 500


def test_method_none_keeps_every_voxel(tmp_path: Path) -> None:
    save_nifti(np.random.default_rng(0).random((10, 12, 8)).astype(np.float32), np.eye(4), tmp_path / "i.nii.gz")
    out = skullstrip.skull_strip(
        tmp_path / "i.nii.gz",
        tmp_path / "m.nii.gz",
        tmp_path / "q.png",
        subject="S1",
        settings={"method": "none"},
    )
    mask = np.asarray(nib.load(out).dataobj)
    assert mask.dtype == np.uint8 and mask.shape == (10, 12, 8) and mask.all()


def test_empty_mask_nan_and_unknown_method_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_nifti(np.ones((10, 12, 8), np.float32), np.eye(4), tmp_path / "i.nii.gz")
    monkeypatch.setattr(skullstrip, "deepbet_mask", lambda img, **kw: np.zeros(img.shape, np.uint8))
    with pytest.raises(DataError, match=r"subject S5.*i.nii.gz.*empty"):
        skullstrip.skull_strip(
            tmp_path / "i.nii.gz",
            tmp_path / "m.nii.gz",
            tmp_path / "q.png",
            subject="S5",
            settings={"method": "deepbet"},
        )
    assert not (tmp_path / "m.nii.gz").exists()
    nan = np.ones((10, 12, 8), np.float32)
    nan[0, 0, 0] = np.nan
    save_nifti(nan, np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"subject S5.*nan.nii.gz.*NaN"):
        skullstrip.skull_strip(
            tmp_path / "nan.nii.gz",
            tmp_path / "m.nii.gz",
            tmp_path / "q.png",
            subject="S5",
            settings={"method": "none"},
        )
    with pytest.raises(MedpipeError, match="bet2"):
        skullstrip.skull_strip(
            tmp_path / "i.nii.gz",
            tmp_path / "m.nii.gz",
            tmp_path / "q.png",
            subject="S5",
            settings={"method": "bet2"},
        )


def test_deepbet_on_non_head_data_raises_data_error(tmp_path: Path) -> None:
    save_nifti(np.zeros((64, 64, 64), np.float32), np.eye(4), tmp_path / "z.nii.gz")
    with pytest.raises(DataError, match=r"subject S6.*z.nii.gz"):
        skullstrip.skull_strip(
            tmp_path / "z.nii.gz",
            tmp_path / "m.nii.gz",
            tmp_path / "q.png",
            subject="S6",
            settings={"method": "deepbet"},
        )
