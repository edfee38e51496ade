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

import numpy as np

from medpipe.core.determinism import ants_deterministic
from medpipe.core.geometry import Geometry, geometry_of
from medpipe.core.io import ants_to_nib, atomic_path, nib_to_ants, save_like
from medpipe.core.qc import save_checkerboard, save_overlay
from medpipe.core.sidecar import write_sidecar
from medpipe.preprocess.coregister import load_checked

logger = logging.getLogger(__name__)


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


def register_to_template(
    image: str | Path,
    template: str | Path,
    out_prefix: str | Path,
    *,
    subject: str,
    seed: int,
    syn_iterations: Sequence[int] = (40, 20, 0),
    out_qc: str | Path | None = None,
) -> TemplateTransforms:
    """Affine + SyN registration of ``image`` to ``template``; forward and inverse transforms are saved.

    Parameters
    ----------
    image
        Subject image (moving).
    template
        Template image (fixed), e.g. an MNI152 T1.
    out_prefix
        Prefix of the saved files: ``{prefix}_affine.mat``, ``{prefix}_warp.nii.gz``,
        ``{prefix}_inversewarp.nii.gz``.
    subject
        Subject ID (errors).
    seed
        Seed for ANTs' metric sampling.
    syn_iterations
        SyN iterations per level (coarse to fine).
    out_qc
        Optional checkerboard of template and warped image.

    Returns
    -------
    TemplateTransforms
        Paths of the saved transforms.
    """
    import ants

    img = load_checked(image, subject)
    tpl = load_checked(template, subject)
    prefix = str(out_prefix)
    files = TemplateTransforms(
        Path(prefix + "_affine.mat"), Path(prefix + "_warp.nii.gz"), Path(prefix + "_inversewarp.nii.gz")
    )
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
        Mask on the template grid (integer classes).
    native
        Subject image that was registered to the template; the output takes its grid.
    transforms
        Result of :func:`register_to_template` for that image.
    out
        Output mask (uint8, with sidecar).
    subject
        Subject ID.
    out_qc
        Optional overlay of the mask on the native image.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    import ants

    native_img = load_checked(native, subject)
    mask_img = load_checked(mask, subject)
    grid: Geometry = geometry_of(native_img)
    warped = ants.apply_transforms(
        fixed=nib_to_ants(native_img),
        moving=nib_to_ants(mask_img),
        transformlist=transforms.inverse,
        whichtoinvert=list(transforms.inverse_invert),
        interpolator="genericLabel",
    )
    data = np.rint(ants_to_nib(warped).get_fdata()).astype(np.uint8)
    save_like(data, grid, out, dtype=np.uint8)
    if out_qc is not None:
        save_overlay(
            np.asarray(native_img.dataobj),
            {"mask": data},
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
