"""Tests of medpipe.core.resample: the training grid, label-aware resampling, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.errors import DataError, GeometryError
from medpipe.core.geometry import Geometry, geometry_of, grid_differences
from medpipe.core.io import save_nifti
from medpipe.core.resample import (
    from_canonical,
    resample_label_like,
    resample_to_grid,
    target_grid,
    to_canonical,
)

STS = [f"STS_00{i}" for i in range(1, 6)]


def _lps_geometry(shape: tuple[int, int, int] = (40, 30, 20), spacing: tuple[float, ...] = (0.9, 1.1, 3.0)) -> Geometry:
    """An LPS-oriented grid like the STS images (dcm2niix keeps the DICOM order)."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [30.0, 12.5, -40.0]
    return Geometry(shape, affine)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def test_target_grid_is_canonical_centred_and_stable() -> None:
    ref = _lps_geometry()
    grid = target_grid(ref, [2.0, 2.0, 2.0])
    assert grid.orientation == "RAS"
    np.testing.assert_allclose(grid.spacing, (2.0, 2.0, 2.0))
    # ceil(extent / spacing): 40*0.9=36 -> 18, 30*1.1=33 -> 17, 20*3=60 -> 30
    assert grid.shape == (18, 17, 30)
    centre = lambda g: g.affine[:3, :3] @ ((np.asarray(g.shape) - 1) / 2) + g.affine[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(grid), centre(ref), atol=1e-9)
    again = target_grid(ref, (2.0, 2.0, 2.0))
    assert grid.shape == again.shape and np.array_equal(grid.affine, again.affine)
    assert target_grid(ref, None) is ref


def test_target_grid_native_spacing_equals_closest_canonical() -> None:
    ref = _lps_geometry()
    canon = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(ref.shape, np.uint8), ref.affine))
    grid = target_grid(ref, geometry_of(canon).spacing)
    assert grid_differences(grid, geometry_of(canon), atol_mm=1e-6) == []


def test_target_grid_rejects_bad_spacing() -> None:
    with pytest.raises(GeometryError, match="three positive"):
        target_grid(_lps_geometry(), [1.0, 0.0, 1.0])


def test_canonical_round_trip_is_exact() -> None:
    geo = Geometry((5, 6, 7), np.array([[0, 0, 2.0, 1], [-1.0, 0, 0, 2], [0, -3.0, 0, 3], [0, 0, 0, 1]]))
    data = np.random.default_rng(0).normal(size=geo.shape)
    canon, cgeo = to_canonical(data, geo)
    assert cgeo.orientation == "RAS"
    assert np.array_equal(from_canonical(canon, geo), data)
    # same world position of every voxel
    idx = np.array([1, 2, 3])
    world = nib.affines.apply_affine(geo.affine, idx)
    cidx = np.rint(nib.affines.apply_affine(np.linalg.inv(cgeo.affine), world)).astype(int)
    assert canon[tuple(cidx)] == data[tuple(idx)]


def test_resample_same_grid_is_identity() -> None:
    geo = _lps_geometry()
    rng = np.random.default_rng(1)
    img = rng.normal(size=geo.shape)
    lab = (rng.random(geo.shape) > 0.7).astype(np.uint8) * 2
    np.testing.assert_allclose(resample_to_grid(img, geo, interpolation="linear", source=geo), img, atol=1e-9)
    assert np.array_equal(resample_to_grid(lab, geo, interpolation="label", source=geo), lab)
    assert np.array_equal(resample_to_grid(lab, geo, interpolation="nearest", source=geo), lab)


def test_label_aware_multiclass_round_trip() -> None:
    geo = Geometry((60, 60, 40), np.diag([1.0, 1.0, 1.0, 1.0]))
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in geo.shape], indexing="ij")
    lab = np.zeros(geo.shape, np.uint8)
    lab[(zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 20) ** 2 < 15**2] = 1
    lab[(zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 20) ** 2 < 7**2] = 2
    fine = target_grid(geo, [0.7, 0.7, 0.7])
    there = resample_to_grid(lab, fine, interpolation="label", source=geo)
    back = resample_to_grid(there, geo, interpolation="label", source=fine)
    assert set(np.unique(back)) == {0, 1, 2}
    for c in (1, 2):
        assert _dice(back == c, lab == c) >= 0.98


def test_resample_rejects_bad_input() -> None:
    geo = _lps_geometry()
    with pytest.raises(ValueError, match="interpolation"):
        resample_to_grid(np.zeros(geo.shape), geo, interpolation="cubic", source=geo)
    with pytest.raises(GeometryError, match="source geometry"):
        resample_to_grid(np.zeros(geo.shape), geo, interpolation="linear")
    with pytest.raises(GeometryError, match="3D array"):
        resample_to_grid(np.zeros((3, 3, 3)), geo, interpolation="linear", source=geo)


def test_resample_label_like_writes_label_on_reference(tmp_path: Path) -> None:
    geo = _lps_geometry()
    lab = np.zeros(geo.shape, np.uint8)
    lab[10:30, 8:22, 5:15] = 1
    save_nifti(lab, geo.affine, tmp_path / "label.nii.gz")
    target = target_grid(geo, [1.5, 1.5, 1.5])
    save_nifti(np.zeros(target.shape, np.float32), target.affine, tmp_path / "ref.nii.gz")
    out = resample_label_like(tmp_path / "label.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "out.nii.gz", subject="S1")
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    assert grid_differences(geometry_of(img), target, atol_mm=1e-6) == []
    vol_in = lab.sum() * np.prod(geo.spacing)
    vol_out = np.asarray(img.dataobj).sum() * np.prod(target.spacing)
    assert abs(vol_out / vol_in - 1) < 0.1
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["stage"] == "resample_label" and side["subject"] == "S1"


def test_resample_label_like_refuses_nan(tmp_path: Path) -> None:
    geo = _lps_geometry()
    lab = np.zeros(geo.shape, np.float32)
    lab[0, 0, 0] = np.nan
    save_nifti(lab, geo.affine, tmp_path / "label.nii.gz")
    save_nifti(np.zeros(geo.shape, np.float32), geo.affine, tmp_path / "ref.nii.gz")
    with pytest.raises(DataError, match=r"subject S9.*label.nii.gz.*NaN"):
        resample_label_like(tmp_path / "label.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "o.nii.gz", subject="S9")


@pytest.mark.shared
@pytest.mark.parametrize("case", STS)
def test_sts_label_round_trip(shared_dir: Path, case: str) -> None:
    """Real tumour masks: native -> preprocessed grid -> native keeps Dice >= 0.99 and the exact grid."""
    mask_img = nib.load(shared_dir / "ibsi_sts" / "nifti" / case / "MR_T1_mask.nii.gz")
    native = geometry_of(mask_img)
    mask = np.asarray(mask_img.dataobj).astype(np.uint8)
    for spacing in (None, (1.0, 1.0, 3.0)):
        grid = target_grid(native, spacing) if spacing else to_canonical(mask, native)[1]
        there = resample_to_grid(mask, grid, interpolation="label", source=native)
        back = resample_to_grid(there, native, interpolation="label", source=grid)
        assert back.shape == mask.shape and back.dtype == mask.dtype
        dice = _dice(back > 0, mask > 0)
        assert dice >= (1.0 if spacing is None else 0.99), (case, spacing, dice)
