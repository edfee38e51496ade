"""Co-registration of a subject's sequences with ANTs.

* :func:`coregister` aligns a sequence/modality (moving) to the reference sequence (fixed) with a
  rigid or affine transform driven by mutual information, and writes the moved image on the
  fixed grid, the ANTs transform (``.mat``) and a checkerboard QC figure.
* :func:`apply_transform_to_points` and :func:`apply_linear_transform` map points and images
  through such a linear transform; :func:`mask_to_sequence_grid` brings a reference-grid mask onto a
  sequence's own grid through the inverse (radiomics of an image read on its own grid).

Template registration (affine + SyN, and a template mask back to native space) lives in
:mod:`medpipe.preprocess.template`.

Settings are ``config["preprocess"]["coregister"]``; their defaults and allowed values come from
``config/schemas/config.schema.yaml`` (:func:`medpipe.core.config.with_defaults`).

Determinism: :func:`medpipe.core.determinism.ants_deterministic` seeds ANTs' random sampling
(``--random-seed``); with ITK pinned to one thread (set by the Snakefile) re-runs are byte-identical.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.config import with_defaults
from medpipe.core.determinism import ants_deterministic
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.geometry import Geometry, check_finite, check_same_grid, flip_lps_ras, geometry_of
from medpipe.core.io import atomic_path, load_nifti, nib_to_ants, save_checked
from medpipe.core.qc import save_checkerboard
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validated ``preprocess.coregister`` settings with the schema's defaults filled in.

    Parameters
    ----------
    settings
        A partial or complete ``config["preprocess"]["coregister"]``.

    Returns
    -------
    dict
        Every key of the section.

    Raises
    ------
    ConfigError
        Naming the invalid key (unknown key, value not allowed by the schema, or per-level lists of
        different lengths).
    """
    merged = with_defaults(settings, "preprocess", "coregister")
    n = len(merged["iterations"])
    if not len(merged["shrink_factors"]) == len(merged["smoothing_sigmas"]) == n:
        raise ConfigError(
            "preprocess.coregister: iterations, shrink_factors and smoothing_sigmas need "
            f"the same length, got {merged['iterations']}, {merged['shrink_factors']}, "
            f"{merged['smoothing_sigmas']}"
        )
    return merged


def load_checked(path: str | Path, subject: str) -> nib.Nifti1Image:
    """Load a 3D NIfTI image, refusing other dimensions and NaN or infinite voxels (:class:`DataError`)."""
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
    if how != "geometry":
        raise ConfigError(f"preprocess.coregister.initialization: no initial transform for {how!r}")
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
    fixed_mask: nib.Nifti1Image | None = None,
) -> tuple[np.ndarray, str]:
    """Rigid/affine ANTs registration of in-memory images.

    Parameters
    ----------
    fixed, moving
        3D images (any grids; world coordinates are used).
    settings
        ``transform``, ``metric``, ``iterations``, ``shrink_factors``, ``smoothing_sigmas``,
        ``sampling_rate``, ``initialization`` (defaults and allowed values: the ``preprocess.coregister``
        section of ``config/schemas/config.schema.yaml``). ``initialization``:
        ``moments`` (ANTs' default) aligns the intensity centres of mass first (robust for MR
        sequences, poor for CT whose air is negative); ``geometry`` aligns the centres of the two
        fields of view; ``identity`` trusts the world coordinates (one session, one frame of reference).
    seed
        Seed of ANTs' random metric sampling.
    workdir
        Folder for ANTs' transform file.
    fixed_mask
        Metric mask on the fixed grid (every stage): only the voxels inside it drive the alignment, as when
        registering onto the brain-extracted reference.

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
        **({} if fixed_mask is None else {"mask": nib_to_ants(fixed_mask), "mask_all_stages": True}),
    )
    return result["warpedmovout"].numpy(), result["fwdtransforms"][0]


def _fixed_mask(
    fixed: str, brainmask: str | Path | None, grid: Geometry, *, subject: str, path: str | Path
) -> nib.Nifti1Image | None:
    """The metric mask of ``fixed: brain`` (the brain mask, checked on the reference grid, with voxels), else None."""
    if fixed == "image":
        return None
    if brainmask is None:
        raise ConfigError(
            "preprocess.coregister.fixed: brain needs the reference's brain mask (preprocess.skullstrip.method "
            "other than none)",
            subject=subject,
            path=path,
        )
    data = load_brain_mask(brainmask, grid, subject=subject)
    return nib.Nifti1Image(data.astype(np.float32), grid.affine)


def load_brain_mask(brainmask: str | Path, grid: Geometry, *, subject: str) -> npt.NDArray[np.bool_]:
    """The reference's brain mask (skullstrip) as booleans, checked to lie on ``grid`` and to hold voxels.

    Raises
    ------
    GeometryError
        The mask is on another grid than the reference.
    DataError
        The mask is empty (nothing to register onto).
    """
    mask = load_checked(brainmask, subject)
    check_same_grid(grid, geometry_of(mask), what="brain mask vs reference", subject=subject, path=brainmask)
    data = np.asarray(mask.dataobj) > 0
    if not data.any():
        raise DataError("the brain mask is empty: nothing to register onto", subject=subject, path=brainmask)
    return data


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
    brainmask: str | Path | None = None,
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
        ``config["preprocess"]["coregister"]``; missing keys take the schema's defaults.
    seed
        Seed for ANTs' metric sampling.
    brainmask
        The reference's brain mask (skull stripping), needed with ``fixed: brain``: the sequence is aligned onto
        the brain-extracted reference (the metric sees only the voxels inside the mask).

    Returns
    -------
    pathlib.Path
        ``out_image``.
    """
    s = _settings(settings)
    fixed_img = load_checked(fixed, subject)
    moving_img = load_checked(moving, subject)
    grid = geometry_of(fixed_img)
    mask_img = _fixed_mask(s["fixed"], brainmask, grid, subject=subject, path=fixed)
    with tempfile.TemporaryDirectory(prefix="medpipe-reg-") as tmp:
        moved, mat = register_linear(fixed_img, moving_img, s, seed=seed, workdir=tmp, fixed_mask=mask_img)
        with atomic_path(out_transform, suffix=".mat") as dst:
            shutil.copyfile(mat, dst)
    if tuple(moved.shape) != tuple(grid.shape):
        raise DataError(
            f"registered image has shape {moved.shape}, expected the fixed grid {grid.shape}",
            subject=subject,
            path=moving,
        )
    save_checked(
        moved.astype(np.float32), grid, out_image, dtype=np.float32, what="registered vs fixed", subject=subject
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
        inputs=[moving, fixed, *([brainmask] if brainmask is not None and mask_img is not None else [])],
        parameters={**s, "seed": int(seed)},
        geometry=grid,
        packages=["antspyx"],
        extra={"transform_file": Path(out_transform).name},
    )
    logger.info("co-registered %s to %s (%s)", Path(moving).name, Path(fixed).name, s["transform"])
    return Path(out_image)


def apply_transform_to_points(points_ras: np.ndarray, transform: str | Path) -> np.ndarray:
    """Map world points (N x 3, RAS mm) through an ANTs linear transform file (fixed -> moving space)."""
    import ants

    tx = ants.read_transform(str(transform))
    lps = flip_lps_ras(points_ras)
    moved = np.array([tx.apply_to_point(tuple(float(v) for v in p)) for p in lps])
    return flip_lps_ras(moved.reshape(-1, 3))


def apply_linear_transform(
    moving: nib.Nifti1Image,
    fixed: nib.Nifti1Image,
    transform: str | Path,
    *,
    interpolation: str = "linear",
    invert: bool = False,
) -> np.ndarray:
    """Resample ``moving`` onto ``fixed``'s grid through an ANTs linear transform (fixed -> moving points).

    ``interpolation`` is ``"linear"`` for images or ``"label"`` (ANTs ``genericLabel``) for masks. With
    ``invert`` the transform is used the other way round (it maps moving-space points to fixed-space points):
    the inverse of a co-registration brings reference-grid data onto the moving sequence's own grid.
    """
    import ants

    interp = {"linear": "linear", "label": "genericLabel"}
    if interpolation not in interp:
        raise ValueError(f"interpolation must be one of {tuple(interp)}, got {interpolation!r}")
    out = ants.apply_transforms(
        fixed=nib_to_ants(fixed),
        moving=nib_to_ants(moving),
        transformlist=[str(transform)],
        whichtoinvert=[bool(invert)],
        interpolator=interp[interpolation],
    )
    data: np.ndarray = out.numpy()
    return np.rint(data).astype(np.uint8) if interpolation == "label" else data


def mask_to_sequence_grid(
    mask: str | Path,
    native: str | Path,
    transform: str | Path,
    out_mask: str | Path,
    *,
    subject: str,
    sequence: str,
) -> Path:
    """Bring a reference-grid mask onto a sequence's own grid through the inverse of its co-registration.

    Parameters
    ----------
    mask
        Binary mask on the reference grid (the human label, or the automatic mask).
    native
        The converted sequence (its own grid, the moving image of the co-registration).
    transform
        The co-registration's ANTs ``.mat`` (reference-grid points -> sequence points); it is inverted here.
    out_mask
        uint8 0/1 mask on ``native``'s grid (label interpolation), with sidecar.
    subject, sequence
        For errors and the sidecar.

    Raises
    ------
    DataError
        When the mask has voxels but none lands inside the sequence's field of view (an empty mask, e.g. an
        automatic mask that found nothing, stays empty).
    """
    native_img = load_checked(native, subject)
    mask_img = load_checked(mask, subject)
    grid = geometry_of(native_img)
    moved = apply_linear_transform(mask_img, native_img, transform, interpolation="label", invert=True)
    moved = (moved > 0).astype(np.uint8)
    reference_voxels = int(np.count_nonzero(np.asarray(mask_img.dataobj)))
    if reference_voxels == 0:  # an automatic mask that found nothing stays empty (radiomics says so)
        logger.warning("subject %s: %s is empty; it stays empty on the grid of %s", subject, Path(mask).name, sequence)
    elif not moved.any():
        raise DataError(
            f"the mask is empty on the grid of sequence {sequence!r} (outside its field of view after the inverse "
            f"co-registration {Path(transform).name})",
            subject=subject,
            path=mask,
        )
    save_checked(moved, grid, out_mask, dtype=np.uint8, what=f"mask on the grid of {sequence}", subject=subject)
    write_sidecar(
        out_mask,
        stage="coregister",
        subject=subject,
        inputs=[mask, native, transform],
        parameters={"interpolator": "genericLabel", "inverse": True, "sequence": sequence},
        geometry=grid,
        packages=["antspyx"],
        extra={"voxels": int(moved.sum()), "reference_voxels": reference_voxels},
    )
    logger.info("mask %s on the grid of %s: %d voxels", Path(mask).name, sequence, int(moved.sum()))
    return Path(out_mask)
