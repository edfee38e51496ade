"""Radiomics-only runs (``automatic_segmentation: false``): the DAG that ``snakemake -n`` plans.

A tiny NIfTI cohort made in code (two labelled CT subjects, one without a label): with segmentation off the
plan holds conversion, the N4 pass-through, radiomics of the human masks and the audit, and none of split,
train, predict, postprocess, evaluate, DICOM-SEG export, skull stripping or normalisation; the radiomics job
reads the reference image of the n4 stage. The same cohort with the default (segmentation on) plans them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from tests.workflow.conftest import REPO, run, snakemake_cmd

pytestmark = pytest.mark.workflow

#: Rules of the automatic segmentation and what only it reads.
SEGMENTATION_RULES = {
    "split",
    "train",
    "predict",
    "postprocess",
    "postprocess_decision",
    "export_dicom_seg",
    "evaluate_subject",
    "evaluate_summary",
    "skullstrip",
    "normalise",
    "resample_label",
    "reproducibility",
}


def _cohort(root: Path) -> Path:
    rng = np.random.default_rng(3)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    rows = ["subject\tdicom\tlabel"]
    for subject in ("a", "b", "c"):
        folder = root / subject
        folder.mkdir()
        ct = rng.normal(40.0, 20.0, (16, 16, 8)).astype(np.float32) - 1000.0 * (rng.random((16, 16, 8)) < 0.1)
        nib.save(nib.Nifti1Image(ct, affine), folder / "image.nii.gz")
        label = ""
        if subject != "c":
            mask = np.zeros(ct.shape, np.uint8)
            mask[5:11, 5:11, 2:6] = 1
            nib.save(nib.Nifti1Image(mask, affine), folder / "mask.nii.gz")
            label = str(folder / "mask.nii.gz")
        rows.append(f"{subject}\t{folder}\t{label}")
    (root / "subjects.tsv").write_text("\n".join(rows) + "\n")
    return root / "subjects.tsv"


def _config(workdir: Path, *, segment: bool) -> Path:
    cfg = {
        "subjects": str(_cohort(workdir)),
        "sequences": {"CT": {"nifti": "image.nii.gz", "modality": "CT"}},
        "reference_sequence": "CT",
        "postprocess": {"dicom_seg": False},
        "radiomics": {"params": "config/radiomics/tiny.yaml", "sources": ["human", "auto"] if segment else ["human"]},
        "signature": {"outcomes": None},
    }
    if not segment:
        cfg["automatic_segmentation"] = False
    path = workdir / ("segment.yaml" if segment else "radiomics_only.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _plan(workdir: Path, config: Path) -> tuple[dict[str, int], str]:
    """Job counts per rule of the dry run, and its whole output."""
    proc = run(snakemake_cmd(workdir, "-n", configfile=config), timeout=300)
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}
    return counts, text


def test_radiomics_only_dag_has_no_segmentation_jobs(tmp_path: Path) -> None:
    counts, text = _plan(tmp_path, _config(tmp_path, segment=False))
    assert counts == {
        "convert_sequence": 2,
        "convert_label": 2,
        "n4": 2,
        "radiomics": 2,
        "radiomics_table": 1,
        "review_list": 1,
        "manifest": 1,
        "all": 1,
    }, counts
    assert not SEGMENTATION_RULES & set(counts)
    assert "without a label get no features: c" in text
    # features of the human mask on the n4 stage's reference image (a byte-identical copy for CT)
    inputs = sorted(re.findall(r"rule radiomics:\n\s+input: ([^\n]+)", text))
    params = REPO / "config/radiomics/tiny.yaml"
    assert inputs == [
        f"results/n4/sub-{s}/sub-{s}_CT.nii.gz, results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz, {params}"
        for s in ("a", "b")
    ], inputs


def test_default_dag_still_trains_and_predicts(tmp_path: Path) -> None:
    counts, _ = _plan(tmp_path, _config(tmp_path, segment=True))
    assert counts["train"] == 2 and counts["predict"] == 3 and counts["postprocess"] == 3
    assert counts["radiomics"] == 5  # human (a, b) and auto (a, b, c)
    assert {"split", "evaluate_summary", "skullstrip", "normalise"} <= set(counts)


def _multimodal(root: Path, *, segment: bool) -> Path:
    """MR reference, a CT with its own masks (another lattice) and a PET without: radiomics of all three."""
    rng = np.random.default_rng(5)
    rows = ["subject\tdicom\tlabel"]
    for subject in ("a", "b", "c"):
        folder = root / subject
        folder.mkdir()
        mr = rng.normal(300.0, 30.0, (16, 16, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(mr, np.diag([1.5, 1.5, 3.0, 1.0])), folder / "mr.nii.gz")
        ct = rng.normal(40.0, 20.0, (20, 20, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(ct, np.diag([1.2, 1.2, 3.0, 1.0])), folder / "ct.nii.gz")
        pet = rng.gamma(2.0, 1.5, (8, 8, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(pet, np.diag([3.0, 3.0, 3.0, 1.0])), folder / "pet.nii.gz")
        label = ""
        if subject != "c":
            mask = np.zeros(mr.shape, np.uint8)
            mask[5:11, 5:11, 2:6] = 1
            nib.save(nib.Nifti1Image(mask, np.diag([1.5, 1.5, 3.0, 1.0])), folder / "mask.nii.gz")
            ct_mask = np.zeros(ct.shape, np.uint8)
            ct_mask[6:14, 6:14, 2:6] = 1
            nib.save(nib.Nifti1Image(ct_mask, np.diag([1.2, 1.2, 3.0, 1.0])), folder / "ct_mask.nii.gz")
            label = str(folder / "mask.nii.gz")
        rows.append(f"{subject}\t{folder}\t{label}")
    (root / "subjects.tsv").write_text("\n".join(rows) + "\n")
    cfg = {
        "subjects": str(root / "subjects.tsv"),
        "sequences": {
            "MR": {"nifti": "mr.nii.gz", "modality": "MR"},
            "CT": {"nifti": "ct.nii.gz", "modality": "CT"},
            "PT": {"nifti": "pet.nii.gz", "modality": "PT"},
        },
        "reference_sequence": "MR",
        "postprocess": {"dicom_seg": False},
        "radiomics": {
            "params": "config/radiomics/tiny.yaml",
            "images": {"MR": {}, "CT": {"grid": "native", "mask": "ct_mask.nii.gz"}, "PT": {"grid": "native"}},
            "sources": ["human", "auto"] if segment else ["human"],
            "perturbations": ["erode"],
        },
        "signature": {"outcomes": None},
    }
    if not segment:
        cfg["automatic_segmentation"] = False
    path = root / "multimodal.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _radiomics_inputs(text: str, image: str) -> list[str]:
    """Image and mask of every planned radiomics job of one image (dry-run output)."""
    jobs = re.findall(r"rule radiomics:\n\s+input: ([^\n]+)\n\s+output: ([^\n]+)", text)
    return sorted(", ".join(i.split(", ")[:2]) for i, o in jobs if f"_img-{image}_" in o)


def test_native_grid_images_read_the_converted_image_with_masks_on_its_grid(tmp_path: Path) -> None:
    counts, text = _plan(tmp_path, _multimodal(tmp_path, segment=False))
    # CT: its own mask, no co-registration; PET: the reference mask through the inverse co-registration.
    assert counts["convert_image_label"] == 2 and counts["coregister"] == 2 and counts["native_mask"] == 2, counts
    assert counts["perturb_mask"] == 2 and counts["perturb_native_mask"] == 4, counts
    assert counts["n4"] == 2 and counts["radiomics"] == 12, counts  # (human + eroded) x 3 images x 2 subjects
    assert _radiomics_inputs(text, "CT") == sorted(
        f"results/convert/sub-{s}/sub-{s}_CT.nii.gz, results/convert/sub-{s}/sub-{s}_img-CT_desc-{m}_mask.nii.gz"
        if m == "human"
        else f"results/convert/sub-{s}/sub-{s}_CT.nii.gz, results/radiomics/sub-{s}/sub-{s}_img-CT_desc-{m}_mask.nii.gz"
        for s in ("a", "b")
        for m in ("human", "erode")
    )
    assert all(
        line.startswith(f"results/convert/sub-{s}/sub-{s}_PT.nii.gz, ")
        for line, s in zip(_radiomics_inputs(text, "PT"), ("a", "a", "b", "b"), strict=True)
    )
    assert "results/convert/sub-a/sub-a_PT.nii.gz, results/coregister/sub-a/sub-a_PT_desc-human_mask.nii.gz" in (
        _radiomics_inputs(text, "PT")
    )
    assert "sub-a_MR.nii.gz" in _radiomics_inputs(text, "MR")[0] and "results/n4/" in _radiomics_inputs(text, "MR")[0]
    # With segmentation, the automatic mask reaches both native grids through the inverse co-registration.
    seg_dir = tmp_path / "seg"
    seg_dir.mkdir()
    counts, text = _plan(seg_dir, _multimodal(seg_dir, segment=True))
    auto = [line for line in _radiomics_inputs(text, "CT") if "auto" in line]
    assert auto == [
        f"results/convert/sub-{s}/sub-{s}_CT.nii.gz, results/coregister/sub-{s}/sub-{s}_CT_desc-auto_mask.nii.gz"
        for s in ("a", "b", "c")
    ], auto
    assert counts["native_mask"] == 2 + 6  # PET human (a, b); CT and PET automatic (a, b, c)


def test_native_grid_image_mask_missing_stops_at_start(tmp_path: Path) -> None:
    config = _multimodal(tmp_path, segment=False)
    (tmp_path / "b" / "ct_mask.nii.gz").unlink()
    proc = run(snakemake_cmd(tmp_path, "-n", configfile=config), timeout=300, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "(b): folder" in out and "has no 'ct_mask.nii.gz' (a radiomics.images.*.mask file" in out, out[-2000:]
