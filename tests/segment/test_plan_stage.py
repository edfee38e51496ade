"""The fingerprint and plan rules' functions (medpipe.segment.plan_stage) and the plan.json record across the
stage boundary: written by segment, read by preprocess (normalise: grid and method) and segment (train settings)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import save_nifti
from medpipe.core.plan_record import Plan, planned_settings, read_plan
from medpipe.core.sidecar import write_json
from medpipe.preprocess.normalise import normalise_image
from medpipe.segment.plan_stage import write_fingerprint, write_plan
from medpipe.segment.settings import resolve_settings

SPACING = (0.9, 0.9, 4.5)  # thick slices: planned 2D, on the median grid


def _cohort(root: Path, modalities: dict[str, list[str]], n: int = 3) -> tuple[list[str], list[str], list[str]]:
    """``n`` subjects with one image per channel (``modalities``: channel -> modality per subject)."""
    shape = (64, 64, 10)
    grid = np.indices(shape).astype(np.float64)
    images, converted, labels = [], [], []
    for i in range(n):
        affine = np.diag([*SPACING, 1.0])
        mm = [(grid[a] - (np.array(shape)[a] / 2 + i)) * SPACING[a] for a in range(3)]
        label = sum(d**2 for d in mm) < 10.0**2
        for c, (channel, mods) in enumerate(modalities.items()):
            data = np.full(shape, 100.0 + 20 * c, dtype=np.float32) + 50.0 * label
            path = save_nifti(data, affine, root / f"S{i}_{channel}.nii.gz")
            write_json({"modality": mods[i], "modality_source": "config"}, root / f"S{i}_{channel}.json")
            images.append(str(path))
            converted.append(str(path))
        labels.append(str(save_nifti(label.astype(np.uint8), affine, root / f"S{i}_label.nii.gz")))
    return images, converted, labels


def _plan(tmp_path: Path, typed: dict | None = None, minutes: float | None = None) -> Plan:
    images, converted, labels = _cohort(tmp_path, {"T1w": ["MR"] * 3, "CT": ["CT"] * 3})
    fp = tmp_path / "plan" / "fingerprint.json"
    write_fingerprint(images, labels, converted, fp, subjects=["S0", "S1", "S2"], channels=["T1w", "CT"])
    return write_plan(
        fp,
        tmp_path / "plan" / "plan.json",
        tmp_path / "plan" / "plan.tsv",
        typed_config=typed or {},
        budget_minutes=minutes,
        memory_mb=2000.0,
    )


def test_fingerprint_and_plan_are_written_with_every_decision_and_its_rule(tmp_path: Path) -> None:
    plan = _plan(tmp_path, typed={"segmentation": {"train": {"batch_size": 3}}})
    fp = json.loads((tmp_path / "plan" / "fingerprint.json").read_text())
    assert fp["modalities"] == ["MR", "CT"] and fp["channels"] == ["T1w", "CT"]
    assert read_plan(tmp_path / "plan" / "plan.json") == plan
    assert plan.value("segmentation.model.architecture") == "unet2d"  # 4.5 mm slices, 0.9 mm in plane
    assert plan.value("preprocess.normalise.per_sequence.CT")["method"] == "ct_foreground"
    assert plan.value("preprocess.normalise.per_sequence.T1w") == {"method": "zscore"}
    assert plan.inputs["budget"]["memory_mb"] == 2000.0
    with (tmp_path / "plan" / "plan.tsv").open() as handle:
        rows = {r["key"]: r for r in csv.DictReader(handle, delimiter="\t")}
    assert (
        rows["segmentation.train.batch_size"]["source"] == "override"
        and rows["segmentation.train.batch_size"]["value"] == "3"
    )
    assert "typed in config" in rows["segmentation.train.batch_size"]["rule"]
    assert rows["segmentation.model.architecture"]["source"] == "plan"
    assert "thick slices" in rows["segmentation.model.architecture"]["rule"]
    assert "2000 MiB" in rows["(memory budget)"]["rule"]
    resolve_settings(planned_settings({}, plan, "segmentation"))  # the planned section is schema-valid


def test_a_time_budget_is_measured_into_epochs_and_a_budget_below_one_epoch_stops(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "a", typed={"segmentation": {"train": {"iterations_per_epoch": 2}}}, minutes=0.5)
    budget = plan.inputs["budget"]
    assert budget["seconds_per_epoch"] > 0
    assert plan.value("segmentation.train.epochs") == min(1000, int(30 // budget["seconds_per_epoch"]))
    with pytest.raises(ConfigError, match=r"time budget 1e-05 min \(0 s\) is shorter than one epoch \(\d"):
        _plan(tmp_path / "b", minutes=1e-5)


def test_the_memory_budget_is_halved_until_the_default_epochs_fit_the_time_budget(tmp_path: Path) -> None:
    # 20 epochs of 400 iterations in 3 s: 0.15 s per epoch, several times less than the 2000 MiB patch takes on this
    # machine (about 0.4 s); with a 12 s budget the test passed only when the machine was busy
    typed = {"segmentation": {"train": {"iterations_per_epoch": 400}}}
    plan = _plan(tmp_path, typed=typed, minutes=0.05)
    budget = plan.inputs["budget"]
    assert budget["memory_mb"] < 2000.0
    rule = (tmp_path / "plan" / "plan.tsv").read_text()
    assert "halved until 20 epochs (schema default) fit the 0.05 min budget: 2000 MiB: patch" in rule
    expected = math.floor(0.05 * 60.0 / budget["seconds_per_epoch"])
    assert plan.value("segmentation.train.epochs") == min(1000, max(1, expected))


def test_a_channel_whose_modality_differs_between_subjects_is_refused(tmp_path: Path) -> None:
    images, converted, labels = _cohort(tmp_path, {"T1w": ["MR"] * 3, "PET": ["PT", "PT", "CT"]})
    with pytest.raises(DataError, match=r"sequence 'PET' is CT here but PT in subject 'S0'") as err:
        write_fingerprint(
            images, labels, converted, tmp_path / "fp.json", subjects=["S0", "S1", "S2"], channels=["T1w", "PET"]
        )
    assert "S2" in str(err.value) and "S2_PET" in str(err.value)


def test_a_subject_with_another_channel_count_is_refused(tmp_path: Path) -> None:
    images, converted, labels = _cohort(tmp_path, {"T1w": ["MR"] * 3})
    with pytest.raises(DataError, match=r"3 images for 3 subjects x 2 channels"):
        write_fingerprint(
            images, labels, converted, tmp_path / "fp.json", subjects=["S0", "S1", "S2"], channels=["T1w", "T2w"]
        )


def test_planned_settings_lay_the_plan_over_the_config_section(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    section = {"method": "percentile", "per_sequence": {"T1w": {"interpolation": "linear"}}, "percentiles": [1, 99]}
    merged = planned_settings(section, plan, "preprocess", "normalise")
    assert merged["per_sequence"]["T1w"] == {"interpolation": "linear", "method": "zscore"}
    assert merged["per_sequence"]["CT"]["method"] == "ct_foreground" and merged["percentiles"] == [1, 99]
    assert section["per_sequence"]["T1w"] == {"interpolation": "linear"}  # the config is not changed
    assert planned_settings(section, None, "preprocess", "normalise") == section
    seg = planned_settings(resolve_settings(None), tmp_path / "plan" / "plan.json", "segmentation")
    assert seg["model"]["architecture"] == "unet2d" and seg["train"]["patch_size"] == plan.value(
        "segmentation.train.patch_size"
    )
    assert seg["infer"] == resolve_settings(None)["infer"]  # keys the plan does not decide are kept
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match=r"bad.json: not a readable medpipe plan|not a medpipe plan"):
        planned_settings({}, tmp_path / "bad.json", "segmentation")


def test_normalise_reads_the_planned_grid_and_method(tmp_path: Path) -> None:
    """The record across the boundary: the plan's spacing and per-sequence method reach the normalise stage."""
    plan = _plan(tmp_path)
    image = tmp_path / "S0_T1w.nii.gz"
    brain = save_nifti(np.ones((64, 64, 10), np.uint8), np.diag([*SPACING, 1.0]), tmp_path / "brain.nii.gz")
    preprocess = with_defaults({"target_spacing_mm": [2.0, 2.0, 2.0]}, "preprocess")
    typed_spacing = planned_settings({"target_spacing_mm": None}, plan, "preprocess")["target_spacing_mm"]
    assert typed_spacing == plan.value("preprocess.target_spacing_mm") == [0.9, 0.9, 4.5]
    out = tmp_path / "norm.nii.gz"
    normalise_image(
        image,
        brain,
        out,
        tmp_path / "qc.png",
        subject="S0",
        settings=planned_settings(preprocess["normalise"], plan, "preprocess", "normalise"),
        target_spacing_mm=typed_spacing,
        sequence="T1w",
    )
    img = nib.load(out)
    assert np.allclose(img.header.get_zooms()[:3], [0.9, 0.9, 4.5])
    data = np.asarray(img.dataobj)
    assert abs(float(data.mean())) < 1e-3 and abs(float(data.std()) - 1.0) < 1e-3  # z-score inside the mask
    sidecar = json.loads((tmp_path / "norm.json").read_text())
    assert sidecar["parameters"]["method"] == "zscore"
