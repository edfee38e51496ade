"""Tests of medpipe.preprocess.normalise: methods, the shared training grid, geometry and content checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.config import normalise_settings as resolve_settings
from medpipe.core.errors import DataError, GeometryError, MedpipeError
from medpipe.core.geometry import geometry_of, grid_differences
from medpipe.core.io import save_nifti
from medpipe.core.records import read_intensity_profile
from medpipe.core.resample import resample_label_like, target_grid
from medpipe.preprocess.normalise import normalise_array, normalise_image

AFFINE = np.array([[-1.2, 0, 0, 20.0], [0, -1.2, 0, 15.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])


def _case(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    img = rng.normal(300, 40, (40, 36, 24)).astype(np.float32)
    mask = np.zeros(img.shape, np.uint8)
    mask[8:32, 6:30, 4:20] = 1
    img[mask == 0] = rng.normal(30, 5, int((mask == 0).sum()))
    save_nifti(img, AFFINE, tmp_path / "t1.nii.gz")
    save_nifti(mask, AFFINE, tmp_path / "mask.nii.gz")
    return tmp_path / "t1.nii.gz", tmp_path / "mask.nii.gz", img, mask


def test_methods_on_arrays() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, (20, 20, 20))
    mask = np.zeros(x.shape, bool)
    mask[5:15, 5:15, 5:15] = True
    z = normalise_array(x, mask, resolve_settings({"method": "zscore"}, None))
    assert abs(z[mask].mean()) < 1e-5 and abs(z[mask].std() - 1) < 1e-5
    p = normalise_array(x, mask, resolve_settings({"method": "percentile"}, None))
    assert p.min() == 0 and p.max() == 1
    assert abs((p[mask] == 1).mean() - 0.005) < 0.002  # 0.5 % of brain voxels clipped at the top
    ct = normalise_array(
        np.array([[[-2000.0, -1000.0, -300.0, 400.0, 3000.0]]]),
        np.ones((1, 1, 5)),
        resolve_settings({"method": "ct_window"}, None),
    )
    np.testing.assert_allclose(ct.ravel(), [0, 0, 0.5, 1, 1], atol=1e-6)


def test_per_sequence_override_and_bad_method() -> None:
    s = resolve_settings({"method": "zscore", "per_sequence": {"CT": {"method": "ct_window"}}}, "CT")
    assert s["method"] == "ct_window" and "per_sequence" not in s
    assert (
        resolve_settings({"method": "zscore", "per_sequence": {"CT": {"method": "ct_window"}}}, "T1w")["method"]
        == "zscore"
    )
    assert resolve_settings({"method": "whitestripe"}, None)["method"] == "whitestripe"  # offered since 3.0.1
    with pytest.raises(MedpipeError, match=r"preprocess\.normalise\.method.*'nyul'"):
        resolve_settings({"method": "nyul"}, None)


def test_native_grid_zscore(tmp_path: Path) -> None:
    img_p, mask_p, _, mask = _case(tmp_path)
    out = normalise_image(
        img_p,
        mask_p,
        tmp_path / "n.nii.gz",
        tmp_path / "q.png",
        subject="S1",
        settings={"method": "zscore"},
        target_spacing_mm=None,
    )
    res = nib.load(out)
    assert np.array_equal(res.affine, nib.load(img_p).affine)
    data = res.get_fdata()
    assert abs(data[mask > 0].mean()) < 1e-4 and abs(data[mask > 0].std() - 1) < 1e-4
    assert json.loads((tmp_path / "n.json").read_text())["parameters"]["method"] == "zscore"
    # Stage contract normalise -> evaluate (domain-shift flags): the sidecar's intensity profile is the
    # percentiles 1..99 of the normalised voxels inside the mask.
    profile = read_intensity_profile(out)
    np.testing.assert_allclose(profile.quantiles, np.percentile(data[mask > 0], range(1, 100)), atol=2e-6)
    assert profile.n_voxels == int((mask > 0).sum())
    sidecar = json.loads((tmp_path / "n.json").read_text())
    del sidecar["intensity_profile"]
    (tmp_path / "n.json").write_text(json.dumps(sidecar))
    with pytest.raises(DataError, match="re-run the normalise stage"):
        read_intensity_profile(out, subject="S1")


def test_all_channels_and_label_share_the_training_grid(tmp_path: Path) -> None:
    img_p, mask_p, img, _ = _case(tmp_path)
    save_nifti(img * 0.5 + 10, AFFINE, tmp_path / "t2.nii.gz")
    spacing = [2.0, 2.0, 2.0]
    a = normalise_image(
        img_p,
        mask_p,
        tmp_path / "a.nii.gz",
        tmp_path / "a.png",
        subject="S1",
        settings={"method": "zscore"},
        target_spacing_mm=spacing,
        sequence="T1w",
    )
    b = normalise_image(
        tmp_path / "t2.nii.gz",
        mask_p,
        tmp_path / "b.nii.gz",
        tmp_path / "b.png",
        subject="S1",
        settings={"method": "percentile", "interpolation": "linear"},
        target_spacing_mm=spacing,
        sequence="T2w",
    )
    lab = resample_label_like(mask_p, a, tmp_path / "lab.nii.gz", subject="S1")
    ga, gb, gl = (geometry_of(nib.load(p)) for p in (a, b, lab))
    assert ga.shape == gb.shape == gl.shape
    assert np.array_equal(ga.affine, gb.affine) and np.array_equal(ga.affine, gl.affine)
    assert grid_differences(ga, target_grid(geometry_of(nib.load(img_p)), spacing), 1e-6) == []
    assert ga.orientation == "RAS"
    pb = nib.load(b).get_fdata()
    assert pb.min() >= 0 and pb.max() <= 1 + 1e-6  # linear interpolation cannot overshoot [0, 1]


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    img_p, mask_p, img, mask = _case(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    save_nifti(mask, shifted, tmp_path / "shifted_mask.nii.gz")
    with pytest.raises(GeometryError, match=r"subject S7.*shifted_mask.nii.gz.*image vs brain mask"):
        normalise_image(
            img_p,
            tmp_path / "shifted_mask.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "o.png",
            subject="S7",
            settings={},
            target_spacing_mm=None,
        )
    save_nifti(np.zeros_like(mask), AFFINE, tmp_path / "empty.nii.gz")
    with pytest.raises(DataError, match=r"subject S7.*empty.nii.gz.*empty"):
        normalise_image(
            img_p,
            tmp_path / "empty.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "o.png",
            subject="S7",
            settings={},
            target_spacing_mm=None,
        )
    bad = img.copy()
    bad[3, 3, 3] = np.nan
    save_nifti(bad, AFFINE, tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"subject S7.*nan.nii.gz.*NaN"):
        normalise_image(
            tmp_path / "nan.nii.gz",
            mask_p,
            tmp_path / "o.nii.gz",
            tmp_path / "o.png",
            subject="S7",
            settings={},
            target_spacing_mm=None,
        )
    assert not (tmp_path / "o.nii.gz").exists()
