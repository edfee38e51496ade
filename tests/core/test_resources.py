"""Tests of medpipe.core.resources: memory requests from NIfTI headers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.resources import estimate_mem_mb, image_mib


def _write(path: Path, shape: tuple[int, ...], dtype: type = np.uint8) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=dtype), np.eye(4)), str(path))
    return path


def test_image_mib_reads_headers_as_float32(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.nii.gz", (64, 64, 32))  # 131,072 voxels -> 0.5 MiB as float32
    b = _write(tmp_path / "b.nii", (32, 32, 16, 2), np.int16)  # 32,768 voxels -> 0.125 MiB
    assert image_mib([a]) == pytest.approx(0.5)
    assert image_mib([a, b]) == pytest.approx(0.625)


def test_missing_folders_other_formats_and_broken_headers_count_zero(tmp_path: Path) -> None:
    (tmp_path / "dicom").mkdir()
    (tmp_path / "RS.dcm").write_bytes(b"not nifti")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    paths = [tmp_path / "missing.nii.gz", tmp_path / "dicom", tmp_path / "RS.dcm", tmp_path / "broken.nii.gz"]
    assert image_mib(paths) == 0.0


def test_request_has_a_floor_grows_with_images_and_retries(tmp_path: Path) -> None:
    small = _write(tmp_path / "small.nii.gz", (16, 16, 16))
    # a 512 x 512 x 300 CT: 300 MiB as float32 (uint8 zeros on disk: small and quick to write)
    big = _write(tmp_path / "big.nii.gz", (512, 512, 300))
    assert estimate_mem_mb([small], base_mb=2000, per_image_mib=40) == 2000
    assert estimate_mem_mb([big], base_mb=2000, per_image_mib=40) == 500 + 40 * 300
    assert estimate_mem_mb([big], base_mb=2000, per_image_mib=40, attempt=2) == 2 * (500 + 40 * 300)
    assert estimate_mem_mb([small], base_mb=2000, per_image_mib=40, attempt=3) == 6000
    assert estimate_mem_mb([], base_mb=700, per_image_mib=10) == 700


@pytest.mark.parametrize(("base", "slope", "attempt"), [(0, 1.0, 1), (100, -1.0, 1), (100, 1.0, 0)])
def test_nonsense_arguments_are_refused(base: int, slope: float, attempt: int) -> None:
    with pytest.raises(ValueError, match="memory estimate needs"):
        estimate_mem_mb([], base_mb=base, per_image_mib=slope, attempt=attempt)
