"""Automatic plan from a dataset fingerprint: the flowchart's acceptance cases on synthetic NIfTI cohorts,
overrides, refusals, and the plan's JSON, config and table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError
from medpipe.core.io import save_nifti
from medpipe.segment.dataset_fingerprint import DatasetFingerprint, compute_dataset_fingerprint
from medpipe.segment.plan import Budget, Plan, make_plan
from medpipe.segment.plan_measure import memory_budget_mb, seconds_per_epoch, time_steps
from medpipe.segment.settings import resolve_settings

BUDGET = Budget(memory_mb=1500.0, minutes=10.0, seconds_per_epoch=4.0)


def cohort(
    root: Path,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    target: str = "ball",
    radius: float = 6.0,
    n: int = 3,
    value: float = 100.0,
) -> DatasetFingerprint:
    """``n`` subjects: a constant body (compresses fast) with a brighter ``target`` (ball or line) in the middle."""
    grid = np.indices(shape).astype(np.float64)
    images, labels = [], []
    for i in range(n):
        centre = np.array(shape) / 2 + i
        if target == "ball":
            mm = [(grid[a] - centre[a]) * spacing[a] for a in range(3)]
            label = sum(d**2 for d in mm) < radius**2
        else:  # a line along axis 0, about 2 voxels thick
            label = (np.abs(grid[1] - centre[1]) < 1) & (np.abs(grid[2] - centre[2]) < 1) & (grid[0] > 3)
            label &= grid[0] < shape[0] - 3
        data = np.full(shape, value, dtype=np.float32) + 50.0 * label
        affine = np.diag([*spacing, 1.0])
        images.append([str(save_nifti(data, affine, root / f"S{i}_img.nii.gz"))])
        labels.append(str(save_nifti(label.astype(np.uint8), affine, root / f"S{i}_label.nii.gz")))
    subjects = [f"S{i}" for i in range(n)]
    return compute_dataset_fingerprint(images, labels, subjects=subjects, channels=["T1w"], modalities=["MR"])


def decision(plan: Plan, key: str) -> dict[str, Any]:
    rows = [r for r in plan.table() if r["key"] == key]
    assert rows, f"no decision on {key}"
    return rows[0]


def test_thick_slices_are_planned_2d(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (96, 96, 12), (0.8, 0.8, 5.0))
    plan = make_plan(fp, budget=BUDGET)
    assert plan.value("segmentation.model.architecture") == "unet2d"
    assert "thick slices" in decision(plan, "segmentation.model.architecture")["rule"]
    assert "6.25x" in decision(plan, "segmentation.model.architecture")["rule"]
    patch = plan.value("segmentation.train.patch_size")
    assert patch[2] == 1 and patch[:2] == [96, 96]
    depth = len(plan.value("segmentation.model.strides"))
    assert all(p % 2**depth == 0 for p in patch[:2])
    assert plan.value("preprocess.target_spacing_mm") == [0.8, 0.8, 5.0]


def test_isotropic_cohort_is_planned_3d_without_cascade(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (48, 48, 48), (1.0, 1.0, 1.0), radius=8.0)
    plan = make_plan(fp, budget=BUDGET)
    assert plan.value("segmentation.model.architecture") == "unet3d"
    assert plan.value("segmentation.train.patch_size") == [48, 48, 48]
    assert plan.value("segmentation.model.strides") == [2, 2, 2]  # 48 -> 24 -> 12 -> 6
    assert plan.value("segmentation.model.channels") == [8, 16, 32, 64]
    assert plan.value("segmentation.loss.name") == "dice_ce"
    assert plan.value("segmentation.train.batch_size") >= 2
    assert "no cascade" in decision(plan, "segmentation.model.architecture")["rule"]


def test_tiny_target_in_a_large_image_gets_a_cascade_and_focal_loss(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (128, 128, 128), (1.0, 1.0, 1.0), radius=2.5)
    assert max(fp.median_class_share()) < 0.001
    plan = make_plan(fp, budget=Budget(memory_mb=600.0))
    assert plan.value("segmentation.model.architecture") == "cascade"
    rule = decision(plan, "segmentation.model.architecture")["rule"]
    assert "< 25 %" in rule and "lowres_creation_threshold" in rule
    assert plan.value("segmentation.model.cascade.coarse_factor") >= 2
    assert plan.value("segmentation.loss.name") == "dice_focal"
    assert "small target" in decision(plan, "segmentation.loss.name")["rule"]
    assert plan.value("segmentation.loss.class_weights") == [1.0, 10.0]
    patch = np.prod(plan.value("segmentation.train.patch_size"))
    assert patch < 0.25 * 128**3


def test_a_typed_cascade_on_images_the_patch_covers_says_so(tmp_path: Path) -> None:
    """The rule text of a typed cascade states the real coverage, not the cascade threshold it did not pass."""
    fp = cohort(tmp_path, (48, 48, 48), (1.0, 1.0, 1.0), radius=8.0)
    typed = {"segmentation": {"model": {"architecture": "cascade"}}}
    plan = make_plan(fp, overrides=typed, budget=BUDGET)
    arch = decision(plan, "segmentation.model.architecture")
    assert arch["source"] == "override" and json.loads(arch["value"]) == "cascade"
    assert "< 25 %" not in arch["rule"] and ">= 25 %" in arch["rule"] and "typed cascade" in arch["rule"]


def test_small_cohort_of_line_shaped_targets_is_planned_2d(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (48, 40, 40), (1.0, 1.0, 1.0), target="line")
    plan = make_plan(fp, budget=BUDGET)
    assert plan.value("segmentation.model.architecture") == "unet2d"
    assert "tube- or line-shaped" in decision(plan, "segmentation.model.architecture")["rule"]


def test_typed_values_win_and_are_marked(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (96, 96, 12), (0.8, 0.8, 5.0))
    typed = {
        "segmentation": {"model": {"architecture": "unet3d"}, "loss": "dice_focal", "train": {"batch_size": 3}},
        "preprocess": {"normalise": {"method": "percentile"}},
    }
    plan = make_plan(fp, overrides=typed, budget=BUDGET)
    arch = decision(plan, "segmentation.model.architecture")
    assert arch["source"] == "override" and json.loads(arch["value"]) == "unet3d"
    assert '"unet2d"' in arch["rule"]  # what the plan would have chosen
    assert plan.value("segmentation.loss.name") == "dice_focal"
    assert decision(plan, "segmentation.loss.name")["source"] == "override"
    assert plan.value("segmentation.train.batch_size") == 3
    assert plan.value("preprocess.normalise.per_sequence.T1w") == {"method": "percentile"}
    assert decision(plan, "preprocess.normalise.per_sequence.T1w")["source"] == "override"
    assert len(plan.value("segmentation.train.patch_size")) == 3 and plan.value("segmentation.train.patch_size")[2] > 1
    assert decision(plan, "segmentation.train.patch_size")["source"] == "plan"


def test_a_typed_patch_sets_the_depth(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (48, 48, 48), (1.0, 1.0, 1.0), radius=8.0)
    plan = make_plan(fp, overrides={"segmentation": {"train": {"patch_size": [32, 32, 24]}}}, budget=BUDGET)
    assert plan.value("segmentation.train.patch_size") == [32, 32, 24]
    assert plan.value("segmentation.model.strides") == [2, 2]  # 24 -> 12 -> 6: two pools on z
    assert plan.value("segmentation.model.channels") == [8, 16, 32]


def test_ct_channels_get_nnunets_ct_normalisation_fitted_per_fold(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (40, 40, 40), (1.0, 1.0, 1.0), value=-50.0)
    fp = DatasetFingerprint(fp.channels, ("CT",), fp.n_classes, fp.subjects, fp.intensities)
    plan = make_plan(fp, budget=BUDGET)
    norm = plan.value("preprocess.normalise.per_sequence.T1w")
    assert norm == {"method": "ct_foreground", "percentiles": [0.5, 99.5]}
    assert "[0.0, 0.0] HU" in decision(plan, "preprocess.normalise.per_sequence.T1w")["rule"]  # foreground: 0 HU


def test_a_budget_too_small_for_one_epoch_is_refused_with_the_numbers(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (48, 48, 48), (1.0, 1.0, 1.0), radius=8.0)
    with pytest.raises(ConfigError, match=r"time budget 0.05 min \(3 s\) is shorter than one epoch \(4.0 s measured"):
        make_plan(fp, budget=Budget(memory_mb=1500.0, minutes=0.05, seconds_per_epoch=4.0))
    with pytest.raises(ConfigError, match=r"memory budget 100 MiB is below the estimate \d+ MiB"):
        make_plan(fp, budget=Budget(memory_mb=100.0))


def test_epochs_fill_the_time_budget(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (48, 48, 48), (1.0, 1.0, 1.0), radius=8.0)
    assert (
        make_plan(fp, budget=Budget(1500.0, minutes=10.0, seconds_per_epoch=7.0)).value("segmentation.train.epochs")
        == 85
    )  # floor(600 / 7)
    assert (
        make_plan(fp, budget=Budget(1500.0, minutes=1e4, seconds_per_epoch=1.0)).value("segmentation.train.epochs")
        == 1000
    )
    untimed = make_plan(fp, budget=Budget(1500.0))
    assert untimed.value("segmentation.train.epochs") == resolve_settings(None)["train"]["epochs"]


def test_plan_json_is_stable_and_its_config_passes_the_schema(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (128, 128, 128), (1.0, 1.0, 1.0), radius=2.5)
    plan = make_plan(fp, budget=Budget(memory_mb=600.0, minutes=5.0, seconds_per_epoch=2.0))
    text = plan.to_json()
    assert text == make_plan(fp, budget=Budget(memory_mb=600.0, minutes=5.0, seconds_per_epoch=2.0)).to_json()
    assert Plan.from_json(text) == plan
    data = json.loads(text)
    assert [d["key"] for d in data["decisions"]] == sorted(d["key"] for d in data["decisions"])
    assert all(d["source"] in ("plan", "override") and d["rule"] for d in data["decisions"])
    config = plan.config()
    resolve_settings(config["segmentation"])  # raises on any value the schema refuses
    with_defaults(config["preprocess"], "preprocess")
    assert config["segmentation"]["model"]["cascade"]["coarse_factor"] >= 2
    assert {r["key"] for r in plan.table()} == {d["key"] for d in data["decisions"]}


def test_time_steps_measures_the_planned_network() -> None:
    settings = {
        "model": {"architecture": "unet3d", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        "train": {"patch_size": [16, 16, 16], "batch_size": 2, "iterations_per_epoch": 4},
    }
    timing = time_steps(settings, 1, steps=1)
    assert timing.seconds_per_step > 0
    assert timing.peak_memory_mb is None or timing.peak_memory_mb >= 0
    assert memory_budget_mb(prefer_cuda=False) > 0
    assert seconds_per_epoch(settings, 1, steps=1) > 0


@pytest.mark.parametrize("axis", [0, 1])
def test_thick_sagittal_or_coronal_slices_are_planned_2d_across_that_axis(tmp_path: Path, axis: int) -> None:
    """A cohort whose 5 mm axis is 0 or 1 is planned as the same cohort with that axis last, axes put back."""
    shape, spacing = [64, 64, 64], [1.0, 1.0, 1.0]
    shape[axis], spacing[axis] = 12, 5.0
    fp = cohort(tmp_path / "thick", (shape[0], shape[1], shape[2]), (spacing[0], spacing[1], spacing[2]))
    plan = make_plan(fp, budget=BUDGET)
    assert plan.value("segmentation.model.architecture") == "unet2d"
    assert "thick slices" in decision(plan, "segmentation.model.architecture")["rule"]
    assert plan.value("segmentation.model.slice_axis") == axis
    row = decision(plan, "segmentation.model.slice_axis")
    assert row["source"] == "plan" and f"slices across axis {axis}" in row["rule"]
    patch = plan.value("segmentation.train.patch_size")
    assert patch[axis] == 1 and [p for a, p in enumerate(patch) if a != axis] == [64, 64]
    depth = len(plan.value("segmentation.model.strides"))
    assert all(p % 2**depth == 0 for a, p in enumerate(patch) if a != axis)
    axial = make_plan(cohort(tmp_path / "axial", (64, 64, 12), (1.0, 1.0, 5.0)), budget=BUDGET)
    assert axial.value("segmentation.model.slice_axis") == 2
    assert axial.value("segmentation.train.patch_size") == [64, 64, 1]
    for key in ("segmentation.model.strides", "segmentation.model.channels", "segmentation.train.batch_size"):
        assert plan.value(key) == axial.value(key), key
    config = plan.config()
    assert resolve_settings(config["segmentation"])["model"]["slice_axis"] == axis  # the schema takes it


def test_a_typed_slice_axis_is_an_override_and_sets_the_thin_patch_axis(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (12, 64, 64), (5.0, 1.0, 1.0))
    typed = {"segmentation": {"model": {"slice_axis": 1}}}
    plan = make_plan(fp, overrides=typed, budget=BUDGET)
    row = decision(plan, "segmentation.model.slice_axis")
    assert row["source"] == "override" and json.loads(row["value"]) == 1 and "plan: 0" in row["rule"]
    patch = plan.value("segmentation.train.patch_size")
    assert patch[1] == 1 and patch[0] > 1 and patch[2] > 1
    typed_patch = make_plan(fp, overrides={"segmentation": {"train": {"patch_size": [1, 32, 48]}}}, budget=BUDGET)
    assert typed_patch.value("segmentation.train.patch_size") == [1, 32, 48]
    assert typed_patch.value("segmentation.model.strides") == [2, 2, 2]  # the in-plane 32 x 48 pools 3 times
    with pytest.raises(ConfigError, match="slice_axis = 3"):
        make_plan(fp, overrides={"segmentation": {"model": {"slice_axis": 3}}}, budget=BUDGET)


def test_a_3d_plan_records_no_slice_axis(tmp_path: Path) -> None:
    fp = cohort(tmp_path, (48, 48, 48), (1.0, 1.0, 1.0), radius=8.0)
    plan = make_plan(fp, budget=BUDGET)
    assert plan.value("segmentation.model.architecture") == "unet3d"
    assert "segmentation.model.slice_axis" not in {r["key"] for r in plan.table()}
