"""NIfTI inputs: voxels and affine kept, header text and extensions dropped, bad volumes refused."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.convert.dicom import convert_sequence
from medpipe.convert.nifti import import_nifti_sequence
from medpipe.core.errors import ConfigError, DataError

SECRET = "DOE^JOHN_MEDPIPEPHI"


def _source(tmp_path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    if affine is None:
        affine = np.array([[0, 0, -1.2, 40], [0.9, 0, 0, -20], [0, 0.9, 0, 5], [0, 0, 0, 1]], dtype=float)
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = SECRET.encode()
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", SECRET.encode()))
    path = tmp_path / "in" / "MR_T1_image.nii.gz"
    path.parent.mkdir(exist_ok=True)
    nib.save(img, path)
    return path


def test_voxels_and_affine_kept_header_text_dropped(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 3000, (10, 12, 7)).astype(np.int16)
    src = _source(tmp_path, data)
    out = convert_sequence(
        src,
        tmp_path / "out/img.nii.gz",
        tmp_path / "out/deid.tsv",
        tmp_path / "out/qc.png",
        subject="S1",
        sequence="T1w",
        selector={"nifti": "MR_T1_image.nii.gz", "series_description": None},
    )
    img = nib.load(out)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, nib.load(src).affine, atol=1e-6)
    assert img.get_data_dtype() == np.int16
    import gzip

    raw = gzip.decompress(out.read_bytes())
    assert SECRET.encode() not in raw and not img.header.extensions
    sidecar = json.loads((tmp_path / "out/img.json").read_text())
    assert sidecar["source"]["format"] == "nifti" and sidecar["inputs"][0]["sha256"]
    assert sidecar["deidentification"]["n_dropped_extensions"] == 1
    assert (sidecar["modality"], sidecar["modality_source"]) == ("MR", "default")
    assert sidecar["modality_note"] == "NIfTI input without sequences.T1w.modality: assumed MR"
    assert "extensions" in (tmp_path / "out/deid.tsv").read_text()
    assert (tmp_path / "out/qc.png").read_bytes()[:4] == b"\x89PNG"


def test_singleton_4d_is_squeezed_and_bad_volumes_refused(tmp_path: Path) -> None:
    src = _source(tmp_path, np.ones((6, 6, 5, 1), np.float32))
    out = import_nifti_sequence(
        src, tmp_path / "a.nii.gz", tmp_path / "a.tsv", tmp_path / "a.png", subject="S2", sequence="T1w"
    )
    assert nib.load(out).shape == (6, 6, 5)
    cases = [
        (np.ones((6, 6, 5, 3), np.float32), r"not one 3D volume \(shape \(6, 6, 5, 3\)\)"),
        (np.full((6, 6, 5), np.nan, np.float32), "180 non-finite voxel"),
    ]
    for data, message in cases:
        src = _source(tmp_path, data)
        with pytest.raises(DataError, match=message) as err:
            import_nifti_sequence(
                src, tmp_path / "b.nii.gz", tmp_path / "b.tsv", tmp_path / "b.png", subject="S3", sequence="T1w"
            )
        assert "S3" in str(err.value) and "MR_T1_image.nii.gz" in str(err.value)
        assert not (tmp_path / "b.nii.gz").exists()
    (tmp_path / "image.mha").write_bytes(b"x")
    with pytest.raises(DataError, match=r"not a NIfTI file name"):
        import_nifti_sequence(
            tmp_path / "image.mha",
            tmp_path / "c.nii.gz",
            tmp_path / "c.tsv",
            tmp_path / "c.png",
            subject="S4",
            sequence="T1w",
        )
    with pytest.raises(DataError, match="NIfTI file not found"):
        import_nifti_sequence(
            tmp_path / "missing.nii.gz",
            tmp_path / "c.nii.gz",
            tmp_path / "c.tsv",
            tmp_path / "c.png",
            subject="S4",
            sequence="T1w",
        )


def test_declared_modality_is_recorded_and_must_be_one(tmp_path: Path) -> None:
    hu = np.random.default_rng(1).integers(-1000, 1500, (8, 8, 5)).astype(np.int16)
    src = _source(tmp_path, hu)
    out = convert_sequence(
        src,
        tmp_path / "ct.nii.gz",
        tmp_path / "ct.tsv",
        tmp_path / "ct.png",
        subject="S5",
        sequence="CT",
        selector={"nifti": "MR_T1_image.nii.gz", "modality": "CT"},
    )
    sidecar = json.loads(out.with_name("ct.json").read_text())
    assert (sidecar["modality"], sidecar["modality_source"]) == ("CT", "config") and "modality_note" not in sidecar
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), hu)
    with pytest.raises(ConfigError, match=r"subject S5.*sequences.CT.modality: a NIfTI input needs exactly one"):
        import_nifti_sequence(
            src,
            tmp_path / "x.nii.gz",
            tmp_path / "x.tsv",
            tmp_path / "x.png",
            subject="S5",
            sequence="CT",
            modality=["CT", "PT"],
        )
