"""Tests of medpipe.preprocess.coregister: accuracy on real MR (TRE), multimodal, determinism, template round trip."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medpipe.core.errors import DataError, MedpipeError
from medpipe.core.geometry import geometry_of, grid_differences
from medpipe.core.io import nib_to_sitk, save_nifti, sitk_to_nib
from medpipe.core.resample import resample_to_grid, target_grid
from medpipe.preprocess.coregister import (
    apply_transform_to_points,
    coregister,
    mask_to_sequence_grid,
    register_linear,
)
from medpipe.preprocess.template import mask_to_native, register_to_template

STS = [f"STS_00{i}" for i in range(1, 6)]
#: Tests register at 2 mm in-plane (the benchmark repeats this at full resolution).
TEST_SPACING = (2.0, 2.0, 3.27)


def random_rigid(
    img: nib.Nifti1Image, rng: np.random.Generator, default: float = 0.0
) -> tuple[nib.Nifti1Image, sitk.Euler3DTransform]:
    """Resample ``img`` through a random rigid transform (±10° per axis, ±10 mm) about its centre.

    The result satisfies ``moved(p) = img(T(p))`` for world (LPS) points ``p``.
    """
    s = nib_to_sitk(img, np.float32)
    t = sitk.Euler3DTransform()
    t.SetCenter(s.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in s.GetSize()]))
    t.SetRotation(*np.deg2rad(rng.uniform(-10, 10, 3)).tolist())
    t.SetTranslation(rng.uniform(-10, 10, 3).tolist())
    return sitk_to_nib(sitk.Resample(s, s, t, sitk.sitkLinear, default)), t


def target_registration_error(points_ras: np.ndarray, truth: sitk.Euler3DTransform, found: str) -> float:
    """Mean distance (mm) between truth(found(p)) and p: 0 when the registration undid the perturbation."""
    moved = apply_transform_to_points(points_ras, found) * np.array([-1.0, -1.0, 1.0])
    back = np.array([truth.TransformPoint(tuple(float(v) for v in p)) for p in moved]) * np.array([-1.0, -1.0, 1.0])
    return float(np.linalg.norm(back - points_ras, axis=1).mean())


def downsample(img: nib.Nifti1Image, spacing: tuple[float, ...]) -> nib.Nifti1Image:
    grid = target_grid(geometry_of(img), spacing)
    return nib.Nifti1Image(resample_to_grid(img, grid, interpolation="linear").astype(np.float32), grid.affine)


def _load_case(shared_dir: Path, case: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    base = shared_dir / "ibsi_sts" / "nifti" / case
    img = nib.load(base / "MR_T1_image.nii.gz")
    mask = nib.load(base / "MR_T1_mask.nii.gz")
    points = nib.affines.apply_affine(mask.affine, np.argwhere(np.asarray(mask.dataobj) > 0))
    return img, points


@pytest.mark.shared
@pytest.mark.parametrize("case", STS)
def test_rigid_tre_below_1mm(shared_dir: Path, tmp_path: Path, case: str) -> None:
    img, points = _load_case(shared_dir, case)
    moved, truth = random_rigid(img, np.random.default_rng(int(case[-3:])))
    _, mat = register_linear(
        downsample(img, TEST_SPACING),
        downsample(moved, TEST_SPACING),
        {"transform": "Rigid"},
        seed=3,
        workdir=tmp_path,
    )
    tre = target_registration_error(points, truth, mat)
    print(f"{case}: TRE {tre:.3f} mm over {len(points)} tumour voxels")
    assert tre < 1.0


@pytest.mark.shared
@pytest.mark.parametrize("case", ["STS_001", "STS_004"])
def test_multimodal_mutual_information_tre(shared_dir: Path, tmp_path: Path, case: str) -> None:
    """Moving image with another, non-monotonic contrast (inverted real T1): MI recovers the transform."""
    img, points = _load_case(shared_dir, case)
    data = np.asarray(img.dataobj, dtype=np.float32)
    hi = float(np.percentile(data, 99))
    remapped = nib.Nifti1Image((np.sqrt(np.clip(hi - data, 0, None)) * 10).astype(np.float32), img.affine)
    moved, truth = random_rigid(remapped, np.random.default_rng(100 + int(case[-3:])))
    _, mat = register_linear(
        downsample(img, TEST_SPACING),
        downsample(moved, TEST_SPACING),
        {"transform": "Rigid", "metric": "mattes"},
        seed=3,
        workdir=tmp_path,
    )
    tre = target_registration_error(points, truth, mat)
    print(f"{case}: multimodal TRE {tre:.3f} mm")
    assert tre < 1.0


def _phantom(shape: tuple[int, int, int] = (40, 36, 30), shift: tuple[float, ...] = (0, 0, 0)) -> np.ndarray:
    idx = np.indices(shape).astype(np.float64)
    c = [(n - 1) / 2 + s for n, s in zip(shape, shift, strict=True)]
    r2 = ((idx[0] - c[0]) / 14) ** 2 + ((idx[1] - c[1]) / 11) ** 2 + ((idx[2] - c[2]) / 9) ** 2
    inner = ((idx[0] - c[0] - 4) / 5) ** 2 + ((idx[1] - c[1]) / 4) ** 2 + ((idx[2] - c[2] + 2) / 3) ** 2
    return (100.0 * (r2 < 1) + 80.0 * (inner < 1) + 20.0 * (idx[0] - c[0]) / shape[0] * (r2 < 1)).astype(np.float32)


def test_coregister_outputs_and_determinism(tmp_path: Path) -> None:
    affine = np.diag([-2.0, -2.0, 2.5, 1.0])
    save_nifti(_phantom(), affine, tmp_path / "fixed.nii.gz")
    save_nifti(_phantom(shift=(2.5, -1.5, 1.0)), affine, tmp_path / "moving.nii.gz")
    outs = []
    for run in ("a", "b"):
        d = tmp_path / run
        coregister(
            tmp_path / "moving.nii.gz",
            tmp_path / "fixed.nii.gz",
            d / "out.nii.gz",
            d / "out_xfm.mat",
            d / "out_qc.png",
            subject="S1",
            settings={"transform": "Rigid"},
            seed=11,
        )
        outs.append(d)
    for name in ("out.nii.gz", "out_xfm.mat", "out.json", "out_qc.png"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    out = nib.load(outs[0] / "out.nii.gz")
    assert grid_differences(geometry_of(out), geometry_of(nib.load(tmp_path / "fixed.nii.gz")), 1e-6) == []
    fixed = _phantom()
    moved = out.get_fdata()
    before = np.corrcoef(fixed.ravel(), _phantom(shift=(2.5, -1.5, 1.0)).ravel())[0, 1]
    after = np.corrcoef(fixed.ravel(), moved.ravel())[0, 1]
    assert after > 0.97 > before
    side = json.loads((outs[0] / "out.json").read_text())
    assert side["stage"] == "coregister" and side["parameters"]["seed"] == 11
    assert side["transform_file"] == "out_xfm.mat"


def test_coregister_refuses_nan_and_bad_settings(tmp_path: Path) -> None:
    bad = _phantom()
    bad[3, 3, 3] = np.nan
    save_nifti(bad, np.eye(4), tmp_path / "bad.nii.gz")
    save_nifti(_phantom(), np.eye(4), tmp_path / "ok.nii.gz")
    with pytest.raises(DataError, match=r"subject S2.*bad.nii.gz.*NaN"):
        coregister(
            tmp_path / "bad.nii.gz",
            tmp_path / "ok.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "o.mat",
            tmp_path / "o.png",
            subject="S2",
            settings={},
            seed=1,
        )
    with pytest.raises(MedpipeError, match="Similarity"):
        coregister(
            tmp_path / "ok.nii.gz",
            tmp_path / "ok.nii.gz",
            tmp_path / "o.nii.gz",
            tmp_path / "o.mat",
            tmp_path / "o.png",
            subject="S2",
            settings={"transform": "Similarity"},
            seed=1,
        )


def test_template_registration_and_mask_back_to_native(tmp_path: Path) -> None:
    """Affine + SyN to a template; the template mask taken back by the inverse matches the native mask."""
    tpl = _phantom()
    native = _phantom(shift=(3.0, -2.0, 1.5))
    save_nifti(tpl, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "tpl.nii.gz")
    save_nifti((tpl > 50).astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "tpl_mask.nii.gz")
    save_nifti(native, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "native.nii.gz")
    tx = register_to_template(
        tmp_path / "native.nii.gz",
        tmp_path / "tpl.nii.gz",
        tmp_path / "sub",
        subject="S3",
        seed=5,
        syn_iterations=(20, 10, 0),
    )
    for f in (tx.affine, tx.warp, tx.inverse_warp):
        assert f.exists()
    out = mask_to_native(
        tmp_path / "tpl_mask.nii.gz", tmp_path / "native.nii.gz", tx, tmp_path / "back.nii.gz", subject="S3"
    )
    back = np.asarray(nib.load(out).dataobj) > 0
    truth = native > 50
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    assert dice >= 0.95, dice


def test_mask_to_sequence_grid_inverts_the_coregistration(tmp_path: Path) -> None:
    """A mask on the reference grid lands on the same structure of the moving sequence, on that sequence's grid."""
    affine = np.diag([-2.0, -2.0, 2.5, 1.0])
    fixed, moving = _phantom(), _phantom(shape=(44, 40, 30), shift=(2.5, -1.5, 1.0))
    save_nifti(fixed, affine, tmp_path / "fixed.nii.gz")
    save_nifti(moving, affine, tmp_path / "moving.nii.gz")
    xfm = tmp_path / "xfm.mat"
    coregister(
        tmp_path / "moving.nii.gz",
        tmp_path / "fixed.nii.gz",
        tmp_path / "moved.nii.gz",
        xfm,
        tmp_path / "qc.png",
        subject="S1",
        settings={"transform": "Rigid"},
        seed=11,
    )
    inner_fixed, inner_moving = fixed > 150, moving > 150  # the inner ellipsoid of each phantom
    save_nifti(inner_fixed.astype(np.uint8), affine, tmp_path / "mask.nii.gz")
    out = mask_to_sequence_grid(
        tmp_path / "mask.nii.gz",
        tmp_path / "moving.nii.gz",
        xfm,
        tmp_path / "native.nii.gz",
        subject="S1",
        sequence="CT",
    )
    img = nib.load(out)
    assert grid_differences(geometry_of(img), geometry_of(nib.load(tmp_path / "moving.nii.gz")), 1e-6) == []
    native = np.asarray(img.dataobj)
    assert native.dtype == np.uint8 and set(np.unique(native)) == {0, 1}
    dice = 2 * np.sum(native & inner_moving) / (native.sum() + inner_moving.sum())
    assert dice > 0.9, dice
    # The identity would put the mask where the fixed phantom's structure is, not the moving one's.
    assert inner_fixed.shape != inner_moving.shape
    side = json.loads((tmp_path / "native.json").read_text())
    assert side["parameters"]["inverse"] is True and side["voxels"] == int(native.sum())

    save_nifti(np.zeros(fixed.shape, np.uint8), affine, tmp_path / "empty.nii.gz")
    empty = mask_to_sequence_grid(
        tmp_path / "empty.nii.gz", tmp_path / "moving.nii.gz", xfm, tmp_path / "e.nii.gz", subject="S1", sequence="CT"
    )
    assert not np.asarray(nib.load(empty).dataobj).any()  # an automatic mask that found nothing stays empty


def _head_and_neck(tmp_path: Path, shift_vox: int) -> tuple[Path, Path, Path]:
    """A textured brain and a large bright neck block; in the moving image only the brain is shifted along x."""
    rng = np.random.default_rng(3)
    shape = (56, 56, 48)
    grid = np.indices(shape).astype(np.float64)
    texture = rng.normal(0, 1, shape)
    texture = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(texture), 1.5))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])

    def image(dx: int) -> np.ndarray:
        brain = ((grid[0] - 28 - dx) ** 2 + (grid[1] - 28) ** 2 + (grid[2] - 30) ** 2) < 11**2
        img = np.where(brain, 300 + 400 * np.roll(texture, dx, axis=0), 20.0)
        neck = (grid[2] < 14) & (np.abs(grid[0] - 20) < 16) & (np.abs(grid[1] - 28) < 14)
        img[neck] = 1500 + 200 * (grid[0][neck] % 7 > 3)
        return img.astype(np.float32), brain

    fixed, brain = image(0)
    moving, _ = image(shift_vox)
    paths = (
        save_nifti(fixed, affine, tmp_path / "fixed.nii.gz"),
        save_nifti(moving, affine, tmp_path / "moving.nii.gz"),
        save_nifti(brain.astype(np.uint8), affine, tmp_path / "brainmask.nii.gz"),
    )
    return paths


def test_sequences_align_onto_the_brain_extracted_reference(tmp_path: Path) -> None:
    """coregister.fixed: brain: only the brain drives the alignment, so a neck that did not move does not pull it."""
    fixed, moving, brainmask = _head_and_neck(tmp_path, shift_vox=3)
    centre = nib.load(fixed).affine @ np.array([28.0, 28.0, 30.0, 1.0])
    errors = {}
    for mode in ("image", "brain"):
        out = tmp_path / mode
        out.mkdir()
        coregister(
            moving,
            fixed,
            out / "moved.nii.gz",
            out / "xfm.mat",
            out / "qc.png",
            subject="S1",
            settings={"fixed": mode, "iterations": [200, 100], "shrink_factors": [2, 1], "smoothing_sigmas": [1, 0]},
            seed=1,
            brainmask=brainmask if mode == "brain" else None,
        )
        mapped = apply_transform_to_points(centre[None, :3], out / "xfm.mat")[0]
        errors[mode] = float(np.linalg.norm(mapped - centre[:3] - np.array([6.0, 0.0, 0.0])))
        sidecar = json.loads((out / "moved.json").read_text())
        assert sidecar["parameters"]["fixed"] == mode
    assert errors["brain"] < 1.0, errors  # the brain's 6 mm shift found within 1 mm
    assert errors["image"] > 2.0 * errors["brain"], errors  # the whole image is pulled towards the neck
    with pytest.raises(MedpipeError, match=r"fixed: brain needs the reference's brain mask"):
        coregister(moving, fixed, tmp_path / "x.nii.gz", tmp_path / "x.mat", tmp_path / "x.png", subject="S1",
                   settings={"fixed": "brain"}, seed=1)  # fmt: skip
