"""Tests of medpipe.postprocess.clean: cleaning operations, the largest-component decision, back to native."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.errors import ConfigError, GeometryError
from medpipe.core.geometry import Geometry, geometry_of
from medpipe.core.io import save_nifti
from medpipe.core.overlap import dice_score
from medpipe.core.resample import resample_to_grid, target_grid
from medpipe.postprocess.clean import (
    ball,
    class_settings,
    clean_binary,
    clean_labels,
    decide_largest_component,
    postprocess_to_native,
)

OFF = {
    "largest_component": False,
    "min_size_mm3": 0,
    "fill_holes": False,
    "connectivity": 26,
    "opening_mm": 0,
    "closing_mm": 0,
}


def blob(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= radius**2


def test_largest_component_and_min_size_in_mm3():
    spacing = (1.0, 1.0, 2.0)
    big = blob((40, 40, 20), (12, 12, 12), 6, spacing)
    small = blob((40, 40, 20), (30, 30, 12), 3, spacing)  # about 113 mm3 of true volume
    mask = big | small
    only_big = clean_binary(mask, spacing, OFF, largest_component=True)
    assert np.array_equal(only_big, big)
    small_mm3 = small.sum() * np.prod(spacing)
    kept = clean_binary(mask, spacing, {**OFF, "min_size_mm3": small_mm3}, largest_component=False)
    assert np.array_equal(kept, mask)  # exactly at the threshold: kept
    removed = clean_binary(mask, spacing, {**OFF, "min_size_mm3": small_mm3 + 1}, largest_component=False)
    assert np.array_equal(removed, big)


def test_connectivity_decides_what_touches():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:5, 2:5, 2:5] = True  # 27 voxels
    mask[5, 5, 5] = True  # touches the cube only at a corner
    assert clean_binary(mask, (1, 1, 1), {**OFF, "connectivity": 26}, largest_component=True).sum() == 28
    assert clean_binary(mask, (1, 1, 1), {**OFF, "connectivity": 6}, largest_component=True).sum() == 27


def test_fill_holes_opening_closing():
    spacing = (1.0, 1.0, 1.0)
    shell = blob((30, 30, 30), (15, 15, 15), 10) & ~blob((30, 30, 30), (15, 15, 15), 4)
    filled = clean_binary(shell, spacing, {**OFF, "fill_holes": True}, largest_component=False)
    assert np.array_equal(filled, blob((30, 30, 30), (15, 15, 15), 10))
    ball_mask = blob((30, 30, 30), (15, 15, 15), 8)
    spur = ball_mask.copy()
    spur[23:29, 15, 15] = True  # one-voxel-thin line sticking out
    opened = clean_binary(spur, spacing, {**OFF, "opening_mm": 1.5}, largest_component=False)
    assert not opened[26:29, 15, 15].any() and opened[15, 15, 15]
    gap = ball_mask.copy()
    gap[:, :, 15] = False  # a one-slice cut through the ball
    closed = clean_binary(gap, spacing, {**OFF, "closing_mm": 1.5}, largest_component=False)
    assert closed[15, 15, 15] and closed.sum() > gap.sum()


def test_ball_is_anisotropic():
    struct = ball(2.0, (1.0, 1.0, 2.0))
    assert struct.shape == (5, 5, 3)
    assert struct[2, 2, 0] and struct[0, 2, 1] and not struct[0, 0, 1]


def test_fill_never_overwrites_another_class():
    rim = blob((30, 30, 30), (15, 15, 15), 10) & ~blob((30, 30, 30), (15, 15, 15), 5)
    core = blob((30, 30, 30), (15, 15, 15), 3)  # gap of background between core and rim
    labels = rim.astype(np.uint8) + 2 * core.astype(np.uint8)
    out, counts = clean_labels(labels, (1, 1, 1), {**OFF, "fill_holes": True})
    assert np.array_equal(out == 2, core)  # the core keeps its label
    assert np.array_equal(out == 1, blob((30, 30, 30), (15, 15, 15), 10) & ~core)  # gap filled as rim
    assert counts["2"]["voxels_before"] == counts["2"]["voxels_after"] == core.sum()


def test_per_class_settings_and_bad_values():
    settings = {"largest_component": True, "per_class": {2: {"largest_component": False}}}
    assert class_settings(settings, 1)["largest_component"] is True
    assert class_settings(settings, 2)["largest_component"] is False
    with pytest.raises(ConfigError, match="unknown keys"):
        class_settings({"per_class": {"1": {"largest_componnt": True}}}, 1)
    with pytest.raises(ConfigError, match="connectivity"):
        class_settings({"connectivity": 8}, 1)
    with pytest.raises(ConfigError, match="auto"):
        clean_labels(np.ones((3, 3, 3), np.uint8), (1, 1, 1), {"largest_component": "auto"})


# --- nnU-Net style decision ------------------------------------------------------------------------


def test_decide_largest_component_per_class(tmp_path):
    shape, aff = (40, 40, 20), np.diag([1.0, 1.0, 2.0, 1.0])
    pairs = []
    for k in range(3):
        gt_lesion = blob(shape, (12 + k, 12, 12), 6, (1, 1, 2))
        gt_other = blob(shape, (30, 30, 10), 3, (1, 1, 2)) | blob(shape, (30, 10, 10), 4, (1, 1, 2))
        gt = gt_lesion.astype(np.uint8) + 2 * gt_other.astype(np.uint8)
        pred = gt.copy()
        pred[blob(shape, (32, 32, 32), 2, (1, 1, 2))] = 1  # spurious lesion blob: LCC helps class 1
        pairs.append((save_nifti(pred, aff, tmp_path / f"p{k}.nii.gz"), save_nifti(gt, aff, tmp_path / f"g{k}.nii.gz")))
    decision = decide_largest_component(pairs, tmp_path / "decision.json", labels={"lesion": 1, "other": 2})
    assert decision["classes"]["1"]["apply_largest_component"] is True
    assert decision["classes"]["1"]["mean_dice_after"] == 1.0
    assert decision["classes"]["2"]["apply_largest_component"] is False  # two true components: LCC hurts
    assert json.loads((tmp_path / "decision.json").read_text()) == decision
    gt0 = nib.load(pairs[0][1]).get_fdata()
    out, counts = clean_labels(
        nib.load(pairs[0][0]).get_fdata(), (1, 1, 2), {**OFF, "largest_component": "auto"}, decision=decision
    )
    assert dice_score(out == 1, gt0 == 1) == 1.0
    assert counts["2"]["largest_component"] == 0 and (out == 2).sum() == (gt0 == 2).sum()


# --- back to the native grid of a real image -------------------------------------------------------


@pytest.mark.shared
def test_real_sts_prediction_returns_exactly_to_native_grid(shared_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sts = shared_dir / "ibsi_sts" / "nifti" / "STS_001"
    image = nib.load(sts / "MR_T1_image.nii.gz")
    human = nib.load(sts / "MR_T1_mask.nii.gz")
    native = geometry_of(image)
    # Training grid: canonical RAS+, 2 mm, then cropped around the tumour (as the network input may be).
    grid = target_grid(native, [2.0, 2.0, 2.0])
    on_grid = resample_to_grid(human, grid, interpolation="label")
    lo = np.argwhere(on_grid).min(axis=0) - 4
    hi = np.argwhere(on_grid).max(axis=0) + 5
    lo, hi = np.maximum(lo, 0), np.minimum(hi, grid.shape)
    crop = on_grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].copy()
    crop_aff = grid.affine.copy()
    crop_aff[:3, 3] = grid.affine[:3, :3] @ lo + grid.affine[:3, 3]
    crop[0:2, 0:2, 0:2] = 1  # a spurious component in a corner: removed by the largest component
    pred = save_nifti(crop.astype(np.uint8), crop_aff, tmp_path / "pred.nii.gz")
    human_path = save_nifti(np.asarray(human.dataobj), human.affine, tmp_path / "human.nii.gz")

    ref = sts / "MR_T1_image.nii.gz"
    out = postprocess_to_native(
        pred,
        ref,
        tmp_path / "auto.nii.gz",
        tmp_path / "qc.png",
        subject="001",
        settings={"largest_component": True},
        human_mask=human_path,
    )
    result = nib.load(out)
    assert result.shape == image.shape
    assert np.array_equal(result.affine, image.affine)
    assert result.get_data_dtype() == np.uint8
    auto = np.asarray(result.dataobj)
    assert set(np.unique(auto)) == {0, 1}
    dice = dice_score(auto, np.asarray(human.dataobj))
    print(f"STS_001 2 mm round trip: Dice {dice:.4f}")
    assert dice > 0.95  # 2 mm round trip of a real tumour
    import cc3d

    assert cc3d.connected_components(auto, connectivity=26).max() == 1
    sidecar = json.loads((tmp_path / "auto.json").read_text())
    assert sidecar["geometry"]["shape"] == list(image.shape)
    assert sidecar["stage"] == "postprocess" and sidecar["classes"]["1"]["largest_component"] == 1
    assert (tmp_path / "qc.png").stat().st_size > 5000

    misplaced = human.affine.copy()
    misplaced[0, 3] += 7.0
    bad_human = save_nifti(np.asarray(human.dataobj), misplaced, tmp_path / "bad_human.nii.gz")
    with pytest.raises(GeometryError, match="human mask"):
        postprocess_to_native(
            pred, ref, tmp_path / "auto2.nii.gz", tmp_path / "qc2.png", subject="001", settings={}, human_mask=bad_human
        )


def test_postprocess_is_byte_identical_and_handles_empty_prediction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref_aff = np.array([[-0.9, 0, 0, 20.0], [0, 0, 1.1, -30.0], [0, 3.0, 0, 5.0], [0, 0, 0, 1]])
    ref = save_nifti(
        np.random.default_rng(0).normal(size=(40, 12, 36)).astype(np.float32), ref_aff, tmp_path / "ref.nii.gz"
    )
    grid = target_grid(Geometry((40, 12, 36), ref_aff), [1.5, 1.5, 1.5])
    pred = np.zeros(grid.shape, np.uint8)
    pred[8:14, 10:18, 6:12] = 1
    p = save_nifti(pred, grid.affine, tmp_path / "pred.nii.gz")
    a = postprocess_to_native(p, ref, tmp_path / "a.nii.gz", tmp_path / "a.png", subject="x", settings={})
    b = postprocess_to_native(p, ref, tmp_path / "b.nii.gz", tmp_path / "b.png", subject="x", settings={})
    assert a.read_bytes() == b.read_bytes()
    assert np.array_equal(nib.load(a).affine, nib.load(ref).affine) and nib.load(a).shape == (40, 12, 36)
    assert np.asarray(nib.load(a).dataobj).sum() > 0
    empty = save_nifti(np.zeros(grid.shape, np.uint8), grid.affine, tmp_path / "empty.nii.gz")
    e = postprocess_to_native(empty, ref, tmp_path / "e.nii.gz", tmp_path / "e.png", subject="x", settings={})
    assert np.asarray(nib.load(e).dataobj).sum() == 0 and nib.load(e).shape == (40, 12, 36)


def test_settings_come_from_the_schema():
    import typing

    from medpipe.core.config import allowed_values, with_defaults
    from medpipe.postprocess import clean

    assert class_settings({}, 1) == with_defaults({}, "postprocess")
    assert list(typing.get_args(clean._Connectivity)) == allowed_values("postprocess", "connectivity")
    assert clean._class_keys() == {
        "largest_component",
        "min_size_mm3",
        "fill_holes",
        "connectivity",
        "opening_mm",
        "closing_mm",
        "interpolation",
    }
