"""Registration with ANTs: co-registration of a subject's sequences and optional template registration.

* :func:`coregister` aligns a sequence/modality (moving) to the reference sequence (fixed) with a
  rigid or affine transform driven by Mattes mutual information, and writes the moved image on the
  fixed grid, the ANTs transform (``.mat``) and a checkerboard QC figure.
* :func:`register_to_template` runs affine + SyN to a template and keeps the forward and inverse
  transforms; :func:`mask_to_native` uses the inverse to bring a template-space mask back onto the
  subject's native grid.

Determinism: :func:`medpipe.core.determinism.ants_deterministic` seeds ANTs' random sampling
(``--random-seed``); with ITK pinned to one thread (set by the Snakefile) re-runs are byte-identical.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medpipe.core.determinism import ants_deterministic
from medpipe.core.errors import DataError, MedpipeError
from medpipe.core.geometry import Geometry, check_finite, check_same_grid, geometry_of
from medpipe.core.io import ants_to_nib, atomic_path, load_nifti, nib_to_ants, save_like
from medpipe.core.qc import save_checkerboard, save_overlay
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)

#: Defaults of ``config["preprocess"]["coregister"]``.
DEFAULTS: dict[str, Any] = {
    "transform": "Rigid",
    "metric": "mattes",
    "iterations": [2100, 1200, 1200, 10],
    "shrink_factors": [6, 4, 2, 1],
    "smoothing_sigmas": [3, 2, 1, 0],
    "sampling_rate": 0.2,
    "initialization": "moments",
}
_TRANSFORMS = ("Rigid", "Affine")
_METRICS = ("mattes", "MI", "GC", "meansquares")
_INITIALIZATIONS = ("moments", "geometry", "identity")


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


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**DEFAULTS, **dict(settings)}
    if merged["transform"] not in _TRANSFORMS:
        raise MedpipeError(f"preprocess.coregister.transform must be one of {_TRANSFORMS}, got {merged['transform']!r}")
    if merged["metric"] not in _METRICS:
        raise MedpipeError(f"preprocess.coregister.metric must be one of {_METRICS}, got {merged['metric']!r}")
    if merged["initialization"] not in _INITIALIZATIONS:
        raise MedpipeError(
            f"preprocess.coregister.initialization must be one of {_INITIALIZATIONS}, got {merged['initialization']!r}"
        )
    n = len(merged["iterations"])
    if not len(merged["shrink_factors"]) == len(merged["smoothing_sigmas"]) == n:
        raise MedpipeError(
            "preprocess.coregister: iterations, shrink_factors and smoothing_sigmas need "
            f"the same length, got {merged['iterations']}, {merged['shrink_factors']}, "
            f"{merged['smoothing_sigmas']}"
        )
    return merged


def _load_checked(path: str | Path, subject: str) -> nib.Nifti1Image:
    img = load_nifti(path, subject=subject)
    if len(img.shape) != 3:
        raise DataError(f"expected a 3D image, got shape {img.shape}", subject=subject, path=path)
    check_finite(np.asarray(img.dataobj), subject=subject, path=path)
    return img


def _initial_transform(fixed: Any, moving: Any, how: str, workdir: Path) -> list[str] | None:
    """Initial moving transform: centres of mass (ANTs default), aligned grid centres, or identity."""
    import ants

    if how == "moments":
        return None
    if how == "identity":
        return ["Identity"]
    centre_f = np.asarray(fixed.origin) + np.asarray(fixed.direction) @ (
        np.asarray(fixed.spacing) * (np.asarray(fixed.shape) - 1) / 2
    )
    centre_m = np.asarray(moving.origin) + np.asarray(moving.direction) @ (
        np.asarray(moving.spacing) * (np.asarray(moving.shape) - 1) / 2
    )
    tx = ants.create_ants_transform(
        transform_type="Euler3DTransform",
        dimension=3,
        translation=tuple(float(v) for v in centre_m - centre_f),
    )
    path = workdir / "init.mat"
    ants.write_transform(tx, str(path))
    return [str(path)]


def register_linear(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    settings: Mapping[str, Any],
    *,
    seed: int,
    workdir: str | Path,
) -> tuple[np.ndarray, str]:
    """Rigid/affine ANTs registration of in-memory images.

    Parameters
    ----------
    fixed, moving
        3D images (any grids; world coordinates are used).
    settings
        ``transform``, ``metric``, ``iterations``, ``shrink_factors``, ``smoothing_sigmas``,
        ``sampling_rate``, ``initialization`` (see :data:`DEFAULTS`). ``initialization``:
        ``moments`` (ANTs' default) aligns the intensity centres of mass first (robust for MR
        sequences, poor for CT whose air is negative); ``geometry`` aligns the centres of the two
        fields of view; ``identity`` trusts the world coordinates (one session, one frame of reference).
    seed
        Seed of ANTs' random metric sampling.
    workdir
        Folder for ANTs' transform file.

    Returns
    -------
    tuple
        The moved image's array on the fixed grid (linear interpolation) and the path of the
        ``GenericAffine.mat`` mapping fixed-space points to moving-space points.
    """
    import ants

    s = _settings(settings)
    fixed_ants, moving_ants = nib_to_ants(fixed), nib_to_ants(moving)
    initial = _initial_transform(fixed_ants, moving_ants, s["initialization"], Path(workdir))
    ants_deterministic(seed)
    # antspyx 0.6.3 refuses non-"Repro" presets when its deterministic flag was set at import time;
    # the seeded --random-seed (read at call time) plus one ITK thread is what makes runs repeatable.
    result = ants.registration(
        fixed=fixed_ants,
        moving=moving_ants,
        type_of_transform=s["transform"],
        initial_transform=initial,
        aff_metric=s["metric"],
        aff_iterations=tuple(int(v) for v in s["iterations"]),
        aff_shrink_factors=tuple(int(v) for v in s["shrink_factors"]),
        aff_smoothing_sigmas=tuple(int(v) for v in s["smoothing_sigmas"]),
        aff_random_sampling_rate=float(s["sampling_rate"]),
        outprefix=str(Path(workdir) / "reg_"),
    )
    return result["warpedmovout"].numpy(), result["fwdtransforms"][0]


def coregister(
    moving: str | Path,
    fixed: str | Path,
    out_image: str | Path,
    out_transform: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any],
    seed: int,
) -> Path:
    """Co-register ``moving`` to ``fixed`` (ANTs rigid/affine, mutual information).

    Parameters
    ----------
    moving, fixed
        Converted NIfTI of the sequence to align and of the reference sequence.
    out_image
        Moved image on the fixed grid (float32 ``.nii.gz``, with sidecar).
    out_transform
        ANTs ``.mat`` transform (fixed-space points -> moving-space points).
    out_qc
        Checkerboard PNG of fixed and moved image.
    subject
        Subject ID (errors, sidecar).
    settings
        ``config["preprocess"]["coregister"]`` (see :data:`DEFAULTS`).
    seed
        Seed for ANTs' metric sampling.

    Returns
    -------
    pathlib.Path
        ``out_image``.
    """
    fixed_img = _load_checked(fixed, subject)
    moving_img = _load_checked(moving, subject)
    grid = geometry_of(fixed_img)
    with tempfile.TemporaryDirectory(prefix="medpipe-reg-") as tmp:
        moved, mat = register_linear(fixed_img, moving_img, settings, seed=seed, workdir=tmp)
        with atomic_path(out_transform, suffix=".mat") as dst:
            shutil.copyfile(mat, dst)
    if tuple(moved.shape) != tuple(grid.shape):
        raise DataError(
            f"registered image has shape {moved.shape}, expected the fixed grid {grid.shape}",
            subject=subject,
            path=moving,
        )
    save_like(moved.astype(np.float32), grid, out_image, dtype=np.float32)
    check_same_grid(
        geometry_of(load_nifti(out_image, subject=subject)),
        grid,
        what="registered vs fixed",
        subject=subject,
        path=out_image,
    )
    save_checkerboard(
        np.asarray(fixed_img.dataobj),
        moved,
        out_qc,
        spacing=grid.spacing,
        title=f"sub-{subject}: {Path(moving).name.split('.')[0]} on {Path(fixed).name.split('.')[0]}",
    )
    write_sidecar(
        out_image,
        stage="coregister",
        subject=subject,
        inputs=[moving, fixed],
        parameters={**_settings(settings), "seed": int(seed)},
        geometry=grid,
        packages=["antspyx"],
        extra={"transform_file": Path(out_transform).name},
    )
    logger.info("co-registered %s to %s (%s)", Path(moving).name, Path(fixed).name, _settings(settings)["transform"])
    return Path(out_image)


def apply_transform_to_points(points_ras: np.ndarray, transform: str | Path) -> np.ndarray:
    """Map world points (N x 3, RAS mm) through an ANTs linear transform file (fixed -> moving space)."""
    import ants

    tx = ants.read_transform(str(transform))
    lps = np.asarray(points_ras, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])
    moved = np.array([tx.apply_to_point(tuple(float(v) for v in p)) for p in lps])
    return moved.reshape(-1, 3) * np.array([-1.0, -1.0, 1.0])


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

    img = _load_checked(image, subject)
    tpl = _load_checked(template, subject)
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

    native_img = _load_checked(native, subject)
    mask_img = _load_checked(mask, subject)
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


def apply_linear_transform(
    moving: nib.Nifti1Image, fixed: nib.Nifti1Image, transform: str | Path, *, interpolation: str = "linear"
) -> np.ndarray:
    """Resample ``moving`` onto ``fixed``'s grid through an ANTs linear transform (fixed -> moving points).

    ``interpolation`` is ``"linear"`` for images or ``"label"`` (ANTs ``genericLabel``) for masks.
    """
    import ants

    interp = {"linear": "linear", "label": "genericLabel"}
    if interpolation not in interp:
        raise ValueError(f"interpolation must be one of {tuple(interp)}, got {interpolation!r}")
    out = ants.apply_transforms(
        fixed=nib_to_ants(fixed),
        moving=nib_to_ants(moving),
        transformlist=[str(transform)],
        interpolator=interp[interpolation],
    )
    data: np.ndarray = out.numpy()
    return np.rint(data).astype(np.uint8) if interpolation == "label" else data
