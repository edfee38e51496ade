"""Tests of the template stage (medpipe.preprocess.template_stage): MNI152 files, real-head registration, checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.audit.review import read_flag
from medpipe.core.config import validate_config
from medpipe.core.errors import ConfigError
from medpipe.core.geometry import geometry_of, grid_differences
from medpipe.core.io import save_nifti
from medpipe.core.resample import resample_to_grid, target_grid
from medpipe.core.sidecar import read_sidecar
from medpipe.preprocess.template import TemplateTransforms, mask_to_native
from medpipe.preprocess.template_stage import (
    MNI152_SPACE,
    TISSUE_LABELS,
    check_template_atlases,
    register_reference,
    write_template,
)

REPO = Path(__file__).resolve().parents[2]
MNI2 = {"method": "mni152", "resolution_mm": 2}


@pytest.fixture(scope="module")
def mni152(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 2 mm MNI152 template, brain mask and tissue classes as rule template writes them."""
    d = tmp_path_factory.mktemp("mni152")
    files = {"image": d / "t1.nii.gz", "brain": d / "brain.nii.gz", "tissue": d / "tissue.nii.gz"}
    write_template(files["image"], files["brain"], files["tissue"], settings=MNI2)
    return files


def test_template_files_share_one_grid_and_the_tissue_classes_fill_the_brain(mni152: dict[str, Path]) -> None:
    grids = [geometry_of(nib.load(p)) for p in mni152.values()]
    assert all(not grid_differences(grids[0], g) for g in grids[1:])
    assert grids[0].spacing == pytest.approx((2.0, 2.0, 2.0))
    brain = np.asarray(nib.load(mni152["brain"]).dataobj)
    tissue = np.asarray(nib.load(mni152["tissue"]).dataobj)
    t1 = nib.load(mni152["image"]).get_fdata()
    assert set(np.unique(tissue)) == {0, *TISSUE_LABELS.values()}
    assert np.array_equal(tissue > 0, brain > 0)
    # T1-weighted: white matter is brighter than grey matter in the template itself
    assert t1[tissue == TISSUE_LABELS["white_matter"]].mean() > t1[tissue == TISSUE_LABELS["grey_matter"]].mean()
    # grey + white matter with cerebellum and brain stem of the (large) MNI152 average: 1.6-2.1 litres
    assert 1.6e6 < brain.sum() * 8.0 < 2.1e6
    sidecar = read_sidecar(mni152["tissue"])
    assert sidecar["space"] == MNI152_SPACE and sidecar["labels"] == TISSUE_LABELS
    assert "nilearn" in sidecar["software"]


def _moved_head(shared_dir: Path, out: Path) -> tuple[Path, Path]:
    """Colin27's head and brain mask, rotated 8 degrees and shifted (12, -9, 15) mm, on a 1.5 mm grid."""
    colin = shared_dir / "colin27"
    head, bet = nib.load(colin / "ch2.nii.gz"), nib.load(colin / "ch2bet.nii.gz")
    th = np.deg2rad(8.0)
    move = np.array(
        [[np.cos(th), -np.sin(th), 0, 12.0], [np.sin(th), np.cos(th), 0, -9.0], [0, 0, 1, 15.0], [0, 0, 0, 1]]
    )
    affine = move @ head.affine
    grid = target_grid(geometry_of(nib.Nifti1Image(np.asarray(head.dataobj), affine)), (1.5, 1.5, 1.5))
    img = resample_to_grid(nib.Nifti1Image(np.asarray(head.dataobj, np.float32), affine), grid, interpolation="linear")
    brain = (np.asarray(bet.dataobj) > 0).astype(np.float32)
    mask = resample_to_grid(nib.Nifti1Image(brain, affine), grid, interpolation="nearest") > 0.5
    save_nifti(img.astype(np.float32), grid.affine, out / "head.nii.gz")
    save_nifti(mask.astype(np.uint8), grid.affine, out / "brainmask.nii.gz")
    return out / "head.nii.gz", out / "brainmask.nii.gz"


@pytest.mark.shared
def test_a_real_head_goes_onto_mni152_and_the_template_masks_come_back(
    shared_dir: Path, tmp_path: Path, mni152: dict[str, Path]
) -> None:
    """Colin27 (moved off MNI space) onto the 2 mm MNI152: the brain mask comes back on the subject's brain."""
    head, brainmask = _moved_head(shared_dir, tmp_path)
    tx = TemplateTransforms.at(tmp_path / "xfm")
    record = register_reference(
        head, brainmask, mni152["image"], mni152["brain"], tx, tmp_path / "reg.nii.gz", tmp_path / "rec.json",
        tmp_path / "qc.png", subject="colin", settings=MNI2, seed=3,
    )  # fmt: skip
    rec = json.loads(record.read_text())
    print(f"Colin27 -> MNI152 2 mm: template brain mask back on the subject, Dice {rec['brain_dice']:.3f}")
    assert rec["brain_dice"] >= 0.95 and rec["flag"] is False
    assert read_flag(record) is None
    reg = nib.load(tmp_path / "reg.nii.gz")
    assert not grid_differences(geometry_of(reg), geometry_of(nib.load(mni152["image"])))
    out = mask_to_native(mni152["tissue"], head, tx, tmp_path / "tissue.nii.gz", subject="colin")
    tissue, t1 = np.asarray(nib.load(out).dataobj), nib.load(head).get_fdata()
    assert not grid_differences(geometry_of(nib.load(out)), geometry_of(nib.load(head)))
    gm, wm = t1[tissue == TISSUE_LABELS["grey_matter"]], t1[tissue == TISSUE_LABELS["white_matter"]]
    # the template's white matter lands on the subject's white matter: brighter than its grey matter on T1
    assert wm.mean() > 1.15 * gm.mean(), (wm.mean(), gm.mean())


def _blob(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    idx = np.indices(shape).astype(np.float64)
    r = np.sqrt(sum(((idx[i] - (n - 1) / 2) / (radius * n / 2)) ** 2 for i, n in enumerate(shape)))
    return (r < 1).astype(np.float32) * (100.0 - 40.0 * r)


def test_a_poor_brain_overlap_is_flagged_for_review(tmp_path: Path) -> None:
    """The registration check flags a subject whose template brain mask does not come back onto its brain mask."""
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    template = _blob((24, 28, 24), 0.7)
    save_nifti(template, affine, tmp_path / "tpl.nii.gz")
    half = (template > 0).astype(np.uint8)
    half[12:] = 0  # the template's brain mask covers half of its brain: brought back it misses half the subject's
    save_nifti(half, affine, tmp_path / "tpl_brain.nii.gz")
    image = _blob((24, 28, 24), 0.6)
    save_nifti(image, affine, tmp_path / "img.nii.gz")
    save_nifti((image > 0).astype(np.uint8), affine, tmp_path / "mask.nii.gz")
    record = register_reference(
        tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz", tmp_path / "tpl.nii.gz", tmp_path / "tpl_brain.nii.gz",
        TemplateTransforms.at(tmp_path / "xfm"), tmp_path / "reg.nii.gz", tmp_path / "rec.json", tmp_path / "qc.png",
        subject="S9", settings={**MNI2, "syn_iterations": [5, 0]}, seed=1,
    )  # fmt: skip
    flagged = read_flag(record)
    assert flagged is not None and flagged.subject == "S9" and flagged.stage == "template"
    assert "Dice" in flagged.reason and flagged.score is not None and 0.5 < flagged.score < 0.8, flagged.score


def test_template_registration_is_refused_without_a_brain_mask() -> None:
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["preprocess"] = {"template": {"method": "mni152"}, "skullstrip": {"method": "none"}}
    with pytest.raises(ConfigError, match=r"preprocess\.template\.method: mni152.*skullstrip\.method is none"):
        validate_config(config, REPO / "config" / "schemas" / "config.schema.yaml")
    config["preprocess"] = {"template": {"method": "mni152", "atlases": {"tissue": "x.nii.gz"}}}
    with pytest.raises(ConfigError, match=r"preprocess\.template\.atlases"):
        validate_config(config, REPO / "config" / "schemas" / "config.schema.yaml")


def test_an_atlas_that_is_not_a_3d_label_map_is_refused(tmp_path: Path) -> None:
    save_nifti(np.zeros((4, 4, 4, 2), np.uint8), np.eye(4), tmp_path / "4d.nii.gz")
    (tmp_path / "text.nii.gz").write_text("not an image")
    with pytest.raises(ConfigError, match=r"atlases\.lobes: an atlas must be a 3D label map.*\(4, 4, 4, 2\)"):
        check_template_atlases({"lobes": tmp_path / "4d.nii.gz"})
    with pytest.raises(ConfigError, match=r"atlases\.aal: cannot read the atlas"):
        check_template_atlases({"aal": tmp_path / "text.nii.gz"})
    with pytest.raises(ConfigError, match=r"atlases\.gone: cannot read"):
        check_template_atlases({"gone": tmp_path / "missing.nii.gz"})
