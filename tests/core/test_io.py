"""Tests of medpipe.core.io: NIfTI writing and in-memory conversions to SimpleITK and ANTs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medpipe.core import io as io_module
from medpipe.core.errors import DataError, GeometryError
from medpipe.core.geometry import Geometry
from medpipe.core.io import (
    ants_to_nib,
    load_nifti,
    nib_to_ants,
    nib_to_sitk,
    save_checked,
    save_nifti,
    sitk_to_nib,
    stored_voxels,
)


def _oblique_image() -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 9, 5)).astype(np.float32)
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 0.8, 3.0]) @ np.diag([-1, 1, 1])
    aff[:3, 3] = [10.0, -20.0, 5.0]
    return nib.Nifti1Image(data, aff)


def test_save_scrubs_header_text_and_is_readable(tmp_path: Path) -> None:
    img = _oblique_image()
    out = save_nifti(np.asarray(img.dataobj), img.affine, tmp_path / "a.nii.gz")
    back = load_nifti(out)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))
    assert back.header["descrip"].item() == b""
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_load_nifti_names_file_on_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"subject s9.*broken.nii.gz"):
        load_nifti(bad, subject="s9")


def test_sitk_roundtrip_keeps_world_coordinates() -> None:
    img = _oblique_image()
    s = nib_to_sitk(img)
    # voxel (2, 3, 1) has the same world position (LPS vs RAS) in both toolkits
    ras = img.affine @ np.array([2, 3, 1, 1.0])
    lps = np.array(s.TransformIndexToPhysicalPoint((2, 3, 1)))
    np.testing.assert_allclose(lps, ras[:3] * [-1, -1, 1], atol=1e-6)
    assert s[2, 3, 1] == pytest.approx(float(np.asarray(img.dataobj)[2, 3, 1]))
    back = sitk_to_nib(s)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))
    assert isinstance(s, sitk.Image)


def test_ants_roundtrip_keeps_world_coordinates() -> None:
    img = _oblique_image()
    a = nib_to_ants(img)
    ras = img.affine @ np.array([4, 1, 2, 1.0])
    import ants

    lps = ants.transform_index_to_physical_point(a, (4, 1, 2))
    np.testing.assert_allclose(lps, ras[:3] * [-1, -1, 1], atol=1e-4)
    back = ants_to_nib(a)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), np.asarray(img.dataobj))


def test_stored_voxels_apply_the_file_scaling(tmp_path: Path) -> None:
    """A CT as dcm2niix writes unsigned pixels: int16 0..4065 with scl_inter -1000 is HU -1000..3065."""
    raw = np.arange(0, 4066, 5, dtype=np.int16).reshape(1, 1, -1)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(1.0, -1000.0)
    nib.save(img, tmp_path / "ct.nii")
    loaded = load_nifti(tmp_path / "ct.nii")
    assert loaded.header.get_slope_inter() == (None, None)  # nibabel moves the scaling to the array proxy
    hu = stored_voxels(loaded)
    assert hu.dtype == np.float32 and hu.min() == -1000.0 and hu.max() == 3065.0
    np.testing.assert_array_equal(hu, raw.astype(np.float32) - 1000.0)
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "plain.nii")
    plain = stored_voxels(load_nifti(tmp_path / "plain.nii"))
    assert plain.dtype == np.int16 and np.array_equal(plain, raw)  # unscaled integers keep their type
    assert stored_voxels(nib.Nifti1Image(raw, np.eye(4))).dtype == np.int16  # in memory: as it is


def test_save_checked_reads_back_the_written_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grid = Geometry((4, 5, 6), np.diag([2.0, 2.0, 3.0, 1.0]))
    data = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    out = save_checked(data, grid, tmp_path / "ok.nii.gz", dtype=np.float32, what="test output", subject="S1")
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), data)
    real = io_module.save_nifti

    def shifted(arr: np.ndarray, affine: np.ndarray, path: Path, **kw: object) -> Path:
        moved = affine.copy()
        moved[0, 3] += 1.0  # a writer that lands 1 mm off the grid it was given
        return real(arr, moved, path, **kw)

    monkeypatch.setattr(io_module, "save_nifti", shifted)
    with pytest.raises(GeometryError, match=r"\[subject S1, file .*bad\.nii\.gz\] test output: grids differ"):
        save_checked(data, grid, tmp_path / "bad.nii.gz", dtype=np.float32, what="test output", subject="S1")
