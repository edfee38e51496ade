"""The template stage: the reference onto a template and the template's masks back (rules template*).

* :func:`write_template` writes the template of ``preprocess.template.method`` (``mni152``: the skull-stripped
  ICBM 2009a nonlinear symmetric T1 that nilearn ships in its wheel, on a 1 or 2 mm grid), its brain mask and
  its tissue classes (1 grey matter, 2 white matter) as one label map.
* :func:`register_reference` takes the N4-corrected reference inside its brain mask (the template is
  skull-stripped) onto the template (affine + SyN, :func:`medpipe.preprocess.template.register_to_template`),
  writes it in template space and checks the registration: the template's brain mask brought back by the inverse
  must overlap the subject's brain mask with Dice >= ``min_brain_dice``, else a review record flags the subject
  (read by :func:`medpipe.audit.review.read_flag`).

The template's masks and any ``preprocess.template.atlases`` entry are brought back onto the native reference grid
by :func:`medpipe.preprocess.template.mask_to_native` (rule template_to_native).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError
from medpipe.core.geometry import geometry_of
from medpipe.core.io import save_checked, save_nifti
from medpipe.core.overlap import dice_score
from medpipe.core.sidecar import write_json, write_sidecar
from medpipe.preprocess.coregister import load_brain_mask, load_checked
from medpipe.preprocess.template import TemplateTransforms, labels_to_native, register_to_template

logger = logging.getLogger(__name__)

#: Template space of ``method: mni152`` (the name templateflow gives the ICBM 2009a nonlinear symmetric template).
MNI152_SPACE = "MNI152NLin2009aSym"
#: Labels of the tissue-class map (``desc-tissue``).
TISSUE_LABELS = {"grey_matter": 1, "white_matter": 2}
#: ``stage`` of the registration check record (its subject folder is ``results/template/sub-X``).
REVIEW_STAGE = "template"


def template_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``preprocess.template`` with the schema's defaults; refuses ``method: none`` (no template to write)."""
    s = with_defaults(settings, "preprocess", "template")
    if s["method"] == "none":
        raise ConfigError("preprocess.template.method is none: there is no template to register onto")
    return s


def check_template_atlases(atlases: Mapping[str, str | Path]) -> None:
    """Refuse, at start, a ``preprocess.template.atlases`` entry that is not a readable 3D NIfTI file.

    Raises
    ------
    ConfigError
        Naming the atlas, the file and what is wrong with it.
    """
    for name, path in atlases.items():
        where = f"preprocess.template.atlases.{name}"
        try:
            shape = nib.load(str(path)).shape  # type: ignore[attr-defined]
        except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            raise ConfigError(f"{where}: cannot read the atlas ({exc})", path=path) from exc
        if len(shape) != 3:
            raise ConfigError(f"{where}: an atlas must be a 3D label map, got shape {shape}", path=path)


def write_template(
    out_image: str | Path, out_brain: str | Path, out_tissue: str | Path, *, settings: Mapping[str, Any]
) -> Path:
    """Write the template T1, its brain mask and its tissue classes (all on one grid, with sidecars).

    Parameters
    ----------
    out_image, out_brain, out_tissue
        Template T1 (float32), brain mask (uint8: grey + white matter probability > ``brain_threshold``) and
        tissue classes (uint8, :data:`TISSUE_LABELS`: the more probable of grey and white matter inside the brain).
    settings
        ``config["preprocess"]["template"]``.

    Returns
    -------
    pathlib.Path
        ``out_image``.
    """
    from nilearn import datasets

    s = template_settings(settings)
    res = int(s["resolution_mm"])
    t1 = datasets.load_mni152_template(resolution=res)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=res, threshold=s["brain_threshold"]).dataobj) > 0
    gm = datasets.load_mni152_gm_template(resolution=res).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=res).get_fdata()
    grid = geometry_of(t1)
    tissue = np.where(brain, np.where(gm >= wm, TISSUE_LABELS["grey_matter"], TISSUE_LABELS["white_matter"]), 0)
    save_checked(t1.get_fdata().astype(np.float32), grid, out_image, dtype=np.float32, what="template")
    save_checked(brain.astype(np.uint8), grid, out_brain, dtype=np.uint8, what="template brain mask")
    save_checked(tissue.astype(np.uint8), grid, out_tissue, dtype=np.uint8, what="template tissue classes")
    for out, what in ((out_image, "T1w"), (out_brain, "brain mask"), (out_tissue, "tissue classes")):
        write_sidecar(
            out,
            stage="template",
            parameters={k: s[k] for k in ("method", "resolution_mm", "brain_threshold")},
            geometry=grid,
            packages=["nilearn"],
            extra={"space": MNI152_SPACE, "content": what, **({"labels": TISSUE_LABELS} if out == out_tissue else {})},
        )
    logger.info("wrote template %s at %d mm: %d brain voxels", MNI152_SPACE, res, int(brain.sum()))
    return Path(out_image)


def _brain_extracted(image: str | Path, brainmask: str | Path, subject: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The reference inside its brain mask (zero outside) and the mask, checked on one grid."""
    img = load_checked(image, subject)
    mask = load_brain_mask(brainmask, geometry_of(img), subject=subject)
    brain = np.where(mask, np.asarray(img.dataobj, dtype=np.float32), 0.0).astype(np.float32)
    return nib.Nifti1Image(brain, img.affine), mask


def register_reference(
    image: str | Path,
    brainmask: str | Path,
    template: str | Path,
    template_brain: str | Path,
    out_transforms: TemplateTransforms,
    out_image: str | Path,
    out_record: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any],
    seed: int,
) -> Path:
    """Register the brain-extracted reference onto the template; write it in template space and check the fit.

    Parameters
    ----------
    image, brainmask
        N4-corrected reference and its brain mask (skullstrip), on the native reference grid.
    template, template_brain
        Template T1 and brain mask (:func:`write_template`).
    out_transforms
        Where the affine, warp and inverse warp go.
    out_image
        The brain-extracted reference in template space (float32, template grid, with sidecar).
    out_record
        Review record: the Dice of the template brain mask brought back vs the subject's brain mask, and
        ``flag`` when it is below ``min_brain_dice``.
    out_qc
        Checkerboard of template and registered image.
    subject, settings, seed
        Subject ID; ``config["preprocess"]["template"]``; seed of ANTs' metric sampling.

    Returns
    -------
    pathlib.Path
        ``out_record``.
    """
    s = template_settings(settings)
    brain, mask = _brain_extracted(image, brainmask, subject)
    tpl = load_checked(template, subject)
    with tempfile.TemporaryDirectory(prefix="medpipe-tplreg-") as tmp:
        moving = save_nifti(np.asarray(brain.dataobj), brain.affine, Path(tmp) / "brain.nii.gz")
        tx = register_to_template(
            moving,
            template,
            out_transforms,
            subject=subject,
            seed=seed,
            syn_iterations=s["syn_iterations"],
            out_qc=out_qc,
            out_warped=out_image,
        )
    grid = geometry_of(tpl)
    back = labels_to_native(brain, load_checked(template_brain, subject), tx) > 0
    dice = dice_score(back, mask)
    inputs = [image, brainmask, template, template_brain]
    params = {**s, "seed": int(seed), "space": MNI152_SPACE}
    write_sidecar(
        out_image,
        stage="template_register",
        subject=subject,
        inputs=inputs,
        parameters=params,
        geometry=grid,
        packages=["antspyx", "nilearn"],
        extra={"brain_dice": dice},
    )
    flag = dice < s["min_brain_dice"]
    reason = f"template brain mask back on the subject: Dice {dice:.3f} < min_brain_dice {s['min_brain_dice']}"
    write_json(
        {
            "subject": subject,
            "stage": REVIEW_STAGE,
            "flag": flag,
            "reason": reason if flag else "",
            "score": dice,
            "threshold": s["min_brain_dice"],
            "brain_dice": dice,
        },
        out_record,
    )
    (logger.warning if flag else logger.info)("sub-%s: template brain mask Dice %.3f", subject, dice)
    return Path(out_record)
