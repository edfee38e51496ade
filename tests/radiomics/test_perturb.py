"""One-voxel mask perturbations: set relations, geometry, per-label handling and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.errors import DataError
from medpipe.core.io import save_nifti
from medpipe.radiomics.perturb import perturb_array, perturb_mask


def _ball(shape: tuple[int, int, int] = (20, 22, 18), radius: float = 5.0) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    centre = np.array(shape, dtype=float)[:, None, None, None] / 2
    return (((grid - centre) ** 2).sum(axis=0) <= radius**2).astype(np.uint8)


def test_erode_inside_dilate_outside_by_one_voxel() -> None:
    ball = _ball()
    eroded, dilated = perturb_array(ball, "erode") > 0, perturb_array(ball, "dilate") > 0
    human = ball > 0
    assert 0 < eroded.sum() < human.sum() < dilated.sum()
    assert not (eroded & ~human).any() and not (human & ~dilated).any()
    # the removed shell is exactly the voxels with a background face neighbour
    from scipy import ndimage

    boundary = human & ~ndimage.binary_erosion(human, ndimage.generate_binary_structure(3, 1))
    assert np.array_equal(human & ~eroded, boundary)
    # every dilated voxel is a face neighbour of the mask
    assert np.array_equal(dilated, ndimage.binary_dilation(human, ndimage.generate_binary_structure(3, 1)))


def test_shift_moves_one_voxel_per_axis_and_clips() -> None:
    ball = _ball()
    shifted = perturb_array(ball, "shift")
    assert shifted.sum() == ball.sum()  # far from the border nothing is lost
    centre_before = np.argwhere(ball).mean(axis=0)
    centre_after = np.argwhere(shifted).mean(axis=0)
    np.testing.assert_allclose(centre_after - centre_before, [1, 1, 1])
    edge = np.zeros((5, 5, 5), dtype=np.uint8)
    edge[4, 2, 2] = edge[1, 1, 1] = 1
    out = perturb_array(edge, "shift")
    assert out.sum() == 1 and out[2, 2, 2] == 1  # the border voxel left the image


def test_labels_are_perturbed_separately_and_never_overwrite() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[2:6, 2:10, 2:10] = 1
    labels[6:10, 2:10, 2:10] = 2  # touching label 1
    dilated = perturb_array(labels, "dilate")
    assert np.array_equal(dilated[labels > 0], labels[labels > 0])  # labelled voxels keep their value
    assert (dilated == 1).sum() > (labels == 1).sum() and (dilated == 2).sum() > (labels == 2).sum()
    eroded = perturb_array(labels, "erode")
    assert set(np.unique(eroded)) == {0, 1, 2}
    # labels erode against each other too: the shared face is lost from both
    assert not eroded[5].any() and not eroded[6].any()


def test_perturb_mask_writes_same_grid_with_sidecar(tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    human = save_nifti(_ball(), affine, tmp_path / "human.nii.gz", dtype=np.uint8)
    out = perturb_mask(human, tmp_path / "erode.nii.gz", subject="S01", kind="erode")
    img = nib.load(out)
    np.testing.assert_array_equal(img.affine, nib.load(human).affine)
    assert img.shape == _ball().shape and img.get_data_dtype() == np.uint8
    sidecar = json.loads((tmp_path / "erode.json").read_text())
    assert sidecar["parameters"]["perturbation"] == "erode" and sidecar["subject"] == "S01"
    counts = sidecar["labels"]["1"]
    assert counts["voxels_after"] == int(np.asarray(img.dataobj).sum()) < counts["voxels_before"]


def test_perturbation_that_empties_a_label_is_named(tmp_path: Path) -> None:
    thin = np.zeros((8, 8, 8), dtype=np.uint8)
    thin[2:6, 2:6, 4] = 1  # one voxel thick
    path = save_nifti(thin, np.eye(4), tmp_path / "thin.nii.gz", dtype=np.uint8)
    with pytest.raises(DataError, match=r"S07.*label 1 \(16 voxels\) is empty after the erode"):
        perturb_mask(path, tmp_path / "out.nii.gz", subject="S07", kind="erode")
    empty = save_nifti(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp_path / "empty.nii.gz", dtype=np.uint8)
    with pytest.raises(DataError, match="mask is empty"):
        perturb_mask(empty, tmp_path / "out.nii.gz", subject="S07", kind="dilate")
    with pytest.raises(ValueError, match="unknown mask perturbation"):
        perturb_array(thin, "blur")


def test_noise_is_seeded_scaled_to_the_mask_and_keeps_the_grid(tmp_path: Path) -> None:
    from medpipe.core.errors import GeometryError
    from medpipe.radiomics.perturb import perturb_image

    rng = np.random.default_rng(1)
    ball = _ball()
    image = np.where(ball > 0, rng.normal(500, 40, ball.shape), rng.normal(100, 5, ball.shape)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    img = save_nifti(image, affine, tmp_path / "img.nii.gz", dtype=np.float32)
    mask = save_nifti(ball, affine, tmp_path / "mask.nii.gz", dtype=np.uint8)
    out = perturb_image(img, mask, tmp_path / "noise.nii.gz", subject="S01", fraction=0.1, seed=42)
    noisy = np.asarray(nib.load(out).dataobj, dtype=float)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(img).affine)
    noise = noisy - image
    assert abs(noise.mean()) < 0.2 and noise.std() == pytest.approx(4.0, rel=0.1)  # 0.1 x ~40 inside
    sidecar = json.loads((tmp_path / "noise.json").read_text())
    assert sidecar["noise_sd"] == pytest.approx(noise.std(), rel=0.05)
    again = perturb_image(img, mask, tmp_path / "again.nii.gz", subject="S01", fraction=0.1, seed=42)
    other = perturb_image(img, mask, tmp_path / "other.nii.gz", subject="S02", fraction=0.1, seed=42)
    assert again.read_bytes() == out.read_bytes()  # same seed and subject: identical
    assert not np.array_equal(np.asarray(nib.load(other).dataobj), noisy)  # other subject: other noise
    shifted = affine.copy()
    shifted[0, 3] = 3.0
    moved = save_nifti(ball, shifted, tmp_path / "moved.nii.gz", dtype=np.uint8)
    with pytest.raises(GeometryError, match="S01"):
        perturb_image(img, moved, tmp_path / "x.nii.gz", subject="S01", fraction=0.1, seed=42)


def test_implemented_perturbations_are_the_schema_enum() -> None:
    from medpipe.core.config import allowed_values
    from medpipe.radiomics.perturb import IMAGE_PERTURBATIONS, MASK_PERTURBATIONS

    assert [*MASK_PERTURBATIONS, *IMAGE_PERTURBATIONS] == allowed_values("radiomics", "perturbations")
