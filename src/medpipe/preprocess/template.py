"""Template registration with ANTs: a subject image to a template and a template mask back.

* :func:`register_to_template` runs affine + SyN to a template and keeps the forward and inverse
  transforms (:class:`TemplateTransforms`).
* :func:`mask_to_native` uses the inverse to bring a template-space mask back onto the subject's
  native grid (label-aware interpolation).

Determinism as in :mod:`medpipe.preprocess.coregister`: :func:`medpipe.core.determinism.ants_deterministic`
seeds ANTs' random sampling; with ITK pinned to one thread re-runs are byte-identical.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.determinism import ants_deterministic
from medpipe.core.errors import DataError
from medpipe.core.geometry import Geometry, geometry_of
from medpipe.core.io import ants_to_nib, atomic_path, nib_to_ants, save_checked, save_like
from medpipe.core.qc import save_checkerboard, save_overlay
from medpipe.core.sidecar import write_sidecar
from medpipe.preprocess.coregister import load_checked

logger = logging.getLogger(__name__)

#: Label maps with at most this many labels get one QC contour per label.
_MAX_QC_LABELS = 6


@dataclass(frozen=True)
class TemplateTransforms:
    """Files of a template registration (ANTs conventions)."""

    affine: Path
    warp: Path
    inverse_warp: Path

    @property
    def forward(self) -> list[str]:
        """Transform list taking subject images into template space (``ants.apply_transforms``)."""
        return [str(self.warp), str(self.affine)]

    @property
    def inverse(self) -> list[str]:
        """Transform list taking template-space images onto the subject grid (with :attr:`inverse_invert`)."""
        return [str(self.affine), str(self.inverse_warp)]

    #: ``whichtoinvert`` matching :attr:`inverse`.
    inverse_invert = (True, False)

    @classmethod
    def at(cls, prefix: str | Path) -> TemplateTransforms:
        """The files ``{prefix}_affine.mat``, ``{prefix}_warp.nii.gz`` and ``{prefix}_inversewarp.nii.gz``."""
        p = str(prefix)
        return cls(Path(p + "_affine.mat"), Path(p + "_warp.nii.gz"), Path(p + "_inversewarp.nii.gz"))


def register_to_template(
    image: str | Path,
    template: str | Path,
    out: str | Path | TemplateTransforms,
    *,
    subject: str,
    seed: int,
    syn_iterations: Sequence[int] = (40, 20, 0),
    out_qc: str | Path | None = None,
    out_warped: str | Path | None = None,
) -> TemplateTransforms:
    """Affine + SyN registration of ``image`` to ``template``; forward and inverse transforms are saved.

    Parameters
    ----------
    image
        Subject image (moving).
    template
        Template image (fixed), e.g. an MNI152 T1.
    out
        Where the transforms go: a :class:`TemplateTransforms`, or a prefix (:meth:`TemplateTransforms.at`).
    subject
        Subject ID (errors).
    seed
        Seed for ANTs' metric sampling.
    syn_iterations
        SyN iterations per level (coarse to fine).
    out_qc
        Optional checkerboard of template and warped image.
    out_warped
        Optional: the registered image on the template grid (float32), as ANTs resampled it.

    Returns
    -------
    TemplateTransforms
        Paths of the saved transforms.
    """
    import ants

    img = load_checked(image, subject)
    tpl = load_checked(template, subject)
    files = out if isinstance(out, TemplateTransforms) else TemplateTransforms.at(out)
    ants_deterministic(seed)
    with tempfile.TemporaryDirectory(prefix="medpipe-tpl-") as tmp:
        result = ants.registration(
            fixed=nib_to_ants(tpl),
            moving=nib_to_ants(img),
            type_of_transform="SyN",
            reg_iterations=tuple(int(v) for v in syn_iterations),
            outprefix=str(Path(tmp) / "tpl_"),
        )
        fwd = result["fwdtransforms"]
        inv = result["invtransforms"]
        sources = {
            files.warp: next(f for f in fwd if f.endswith("Warp.nii.gz")),
            files.affine: next(f for f in fwd if f.endswith(".mat")),
            files.inverse_warp: next(f for f in inv if f.endswith("InverseWarp.nii.gz")),
        }
        for dst, src in sources.items():
            with atomic_path(dst) as tmp_dst:
                shutil.copyfile(src, tmp_dst)
        if out_warped is not None:
            warped = ants_to_nib(result["warpedmovout"]).get_fdata().astype(np.float32)
            save_checked(warped, geometry_of(tpl), out_warped, dtype=np.float32, what="registered vs template")
        if out_qc is not None:
            save_checkerboard(
                np.asarray(tpl.dataobj),
                result["warpedmovout"].numpy(),
                out_qc,
                spacing=geometry_of(tpl).spacing,
                title=f"sub-{subject}: image on template",
            )
    logger.info("registered %s to template %s", Path(image).name, Path(template).name)
    return files


def labels_to_native(
    native: nib.Nifti1Image, labels: nib.Nifti1Image, transforms: TemplateTransforms
) -> npt.NDArray[np.int64]:
    """A template-space label map on the native grid of ``native`` (inverse transforms, ``genericLabel``)."""
    import ants

    warped = ants.apply_transforms(
        fixed=nib_to_ants(native),
        moving=nib_to_ants(labels),
        transformlist=transforms.inverse,
        whichtoinvert=list(transforms.inverse_invert),
        interpolator="genericLabel",
    )
    return np.rint(ants_to_nib(warped).get_fdata()).astype(np.int64)


def _contours(labels: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
    """QC contours of a label map: one per label for a few classes, the outline of all labels for an atlas."""
    values = [int(v) for v in np.unique(labels) if v > 0]
    if 1 < len(values) <= _MAX_QC_LABELS:
        return {f"label {v}": labels == v for v in values}
    return {"mask": labels > 0}


def mask_to_native(
    mask: str | Path,
    native: str | Path,
    transforms: TemplateTransforms,
    out: str | Path,
    *,
    subject: str,
    out_qc: str | Path | None = None,
) -> Path:
    """Bring a template-space mask back onto the subject's native grid (inverse transforms, label-aware).

    Parameters
    ----------
    mask
        Mask or label map in template space (non-negative integer labels).
    native
        Subject image that was registered to the template; the output takes its grid.
    transforms
        Result of :func:`register_to_template` for that image.
    out
        Output label map (uint8, uint16 for labels above 255; with sidecar).
    subject
        Subject ID.
    out_qc
        Optional overlay of the mask on the native image.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    native_img = load_checked(native, subject)
    mask_img = load_checked(mask, subject)
    grid: Geometry = geometry_of(native_img)
    labels = np.asarray(mask_img.dataobj)
    if labels.min() < 0 or not np.array_equal(labels, np.rint(labels)):
        raise DataError("a template mask must hold non-negative integer labels", subject=subject, path=mask)
    data = labels_to_native(native_img, mask_img, transforms)
    dtype = np.uint8 if int(labels.max()) <= np.iinfo(np.uint8).max else np.uint16
    save_like(data.astype(dtype), grid, out, dtype=dtype)
    if out_qc is not None:
        save_overlay(
            np.asarray(native_img.dataobj),
            _contours(data),
            out_qc,
            spacing=grid.spacing,
            title=f"sub-{subject}: template mask in native space",
        )
    write_sidecar(
        out,
        stage="mask_to_native",
        subject=subject,
        inputs=[mask, native, transforms.affine, transforms.inverse_warp],
        parameters={"interpolator": "genericLabel"},
        geometry=grid,
        packages=["antspyx"],
    )
    return Path(out)
