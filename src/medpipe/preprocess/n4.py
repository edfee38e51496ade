"""N4 bias-field correction (ANTs) with the estimated field saved for QC, or a pass-through by modality.

One N4 run returns the multiplicative field ``B``; the corrected image is ``image / B`` (what N4
itself outputs). N4 fits the field inside a head/foreground mask (``settings["mask"]``: ``otsu``
or ``none``) and extrapolates it over the whole grid. Defaults and allowed values of the settings
are those of the ``preprocess.n4`` section of ``config/schemas/config.schema.yaml``.

Whether N4 runs depends on the sequence's modality (:class:`medpipe.core.records.ModalityRecord`, read
from the converted image's sidecar): ``preprocess.n4.per_sequence.<sequence>`` when set, else
``preprocess.n4.modalities.<modality>`` (schema defaults: MR on, CT and PT off). When it does not run
(:func:`pass_through`), the output image is a byte-identical copy of the input, the bias-field output
is a field of ones (float32) on the same grid, the QC figure shows the image, and the sidecar of the
output records ``"skipped": true`` with the modality and the config key that decided it.

N4 works on log intensities and needs non-negative values. A CT or PET image (:data:`QUANTITATIVE`) with
negative values that N4 is forced on for is refused with a :class:`ConfigError` rather than shifted to start at
0: a shift changes every value that normalisation and radiomics read. An MR image (arbitrary units) with
negative values is shifted to >= 0 with a warning, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.config import with_defaults
from medpipe.core.determinism import ants_deterministic
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.geometry import Geometry, check_finite, geometry_of
from medpipe.core.io import copy_file, load_nifti, nib_to_ants, save_checked, save_like
from medpipe.core.qc import save_image_panel
from medpipe.core.records import ModalityRecord
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)

#: Modalities whose values are quantitative (Hounsfield units, activity concentration): never shifted.
QUANTITATIVE = frozenset({"CT", "PT"})


def foreground_mask(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Head/body mask: Otsu threshold, hole filling and the largest connected component (SimpleITK, cc3d)."""
    import cc3d
    import SimpleITK as sitk
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float32)
    img = sitk.GetImageFromArray(data)
    otsu = sitk.GetArrayFromImage(sitk.OtsuThreshold(img, 0, 1, 128)).astype(bool)
    if not otsu.any():
        return np.ones(data.shape, dtype=np.uint8)
    labels = cc3d.connected_components(otsu.astype(np.uint8), connectivity=26)
    largest = np.bincount(labels.ravel())[1:].argmax() + 1
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(labels == largest, iterations=2))
    return np.asarray(filled, dtype=np.uint8)


def _whole_image(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Fitting mask of ``mask: none``: every voxel."""
    return np.ones(np.shape(image), dtype=np.uint8)


#: Fitting mask per value of ``preprocess.n4.mask`` (keys: the schema's enum, checked by the tests).
FIT_MASKS: dict[str, Callable[[npt.NDArray[Any]], npt.NDArray[np.uint8]]] = {
    "otsu": foreground_mask,
    "none": _whole_image,
}


@dataclass(frozen=True)
class N4Decision:
    """Whether N4 runs on one sequence, and which config key decided it.

    Attributes
    ----------
    run
        ``True`` when N4 corrects the image, ``False`` for a pass-through.
    modality
        The sequence's modality record.
    key
        The deciding config key (``preprocess.n4.per_sequence.<sequence>`` or
        ``preprocess.n4.modalities.<modality>``).
    """

    run: bool
    modality: ModalityRecord
    key: str

    @property
    def reason(self) -> str:
        """One sentence: what was done and why."""
        what = "N4 corrected the image" if self.run else "N4 skipped: the image is passed through unchanged"
        return f"{what} ({self.key}: {str(self.run).lower()}; modality {self.modality.modality})"

    def to_json(self) -> dict[str, Any]:
        """The sidecar fields: ``skipped`` and ``n4_decision`` (modality, its source, key, reason)."""
        return {
            "skipped": not self.run,
            "n4_decision": {**self.modality.to_json(), "key": self.key, "reason": self.reason},
        }


def n4_decision(settings: Mapping[str, Any], *, sequence: str | None, modality: ModalityRecord) -> N4Decision:
    """Decide whether N4 runs: ``per_sequence[sequence]`` when set, else ``modalities[modality]``.

    Raises
    ------
    ConfigError
        When neither key covers the modality (a DICOM Modality other than MR, CT or PT).
    """
    per_sequence, modalities = settings["per_sequence"], settings["modalities"]
    if sequence is not None and sequence in per_sequence:
        return N4Decision(bool(per_sequence[sequence]), modality, f"preprocess.n4.per_sequence.{sequence}")
    if modality.modality in modalities:
        return N4Decision(
            bool(modalities[modality.modality]), modality, f"preprocess.n4.modalities.{modality.modality}"
        )
    raise ConfigError(
        f"sequence {sequence}: modality {modality.modality!r} has no N4 setting; set preprocess.n4.modalities."
        f"{modality.modality} or preprocess.n4.per_sequence.{sequence} to true or false"
    )


def _load_3d(image: str | Path, subject: str) -> tuple[nib.Nifti1Image, npt.NDArray[np.float32]]:
    """Load a finite 3D image as float32; DataError when it is not 3D or has NaN or infinite voxels."""
    img = load_nifti(image, subject=subject)
    if len(img.shape) != 3:
        raise DataError(f"N4 needs a 3D image, got shape {img.shape}", subject=subject, path=image)
    data = np.asarray(img.dataobj, dtype=np.float32)
    check_finite(data, subject=subject, path=image)
    return img, data


def _load_for_n4(
    image: str | Path, subject: str, decision: N4Decision
) -> tuple[nib.Nifti1Image, npt.NDArray[np.float32]]:
    """Load a 3D image as float32 for N4 (which works on log intensities: values must be >= 0).

    Returns
    -------
    img, data
        The loaded image and its voxels.

    Raises
    ------
    ConfigError
        When a CT/PET image has negative values: shifting them would destroy its quantitative values.
    DataError
        When the image is not 3D, has NaN or infinite voxels, or has no positive voxel.
    """
    img, data = _load_3d(image, subject)
    if float(data.min()) < 0 and decision.modality.modality in QUANTITATIVE:
        m = decision.modality.modality
        raise ConfigError(
            f"N4 is on ({decision.key}: true) for an image with negative values (min {float(data.min()):.4g}, "
            f"modality {m}). N4 needs values >= 0, and shifting CT Hounsfield units or PET values to start at 0 "
            f"would destroy them for normalisation and radiomics: switch N4 off for this sequence "
            f"({decision.key}: false), or give N4 a non-negative image",
            subject=subject,
            path=image,
        )
    if float(data.min()) < 0:  # MR: arbitrary units, the shift only moves N4's log domain
        logger.warning(
            "image has negative values (min %.3g); N4 works on log intensities, shifting to >= 0",
            float(data.min()),
        )
        data = data - float(data.min())
    if not np.any(data > 0):
        raise DataError("image is empty (no positive voxels); N4 cannot run", subject=subject, path=image)
    return img, data


def _fit_bias_field(
    img: nib.Nifti1Image, data: npt.NDArray[np.float32], s: Mapping[str, Any], *, seed: int
) -> npt.NDArray[Any]:
    """Estimate N4's multiplicative bias field of ``data`` (on ``img``'s grid) with the settings ``s``."""
    import ants

    mask = FIT_MASKS[s["mask"]](data)
    ants_img = nib_to_ants(img.__class__(data, img.affine))
    ants_mask = ants_img.new_image_like(mask.astype(np.float32))
    ants_deterministic(seed)
    field: npt.NDArray[Any] = ants.n4_bias_field_correction(
        ants_img,
        mask=ants_mask,
        shrink_factor=int(s["shrink_factor"]),
        convergence={"iters": [int(v) for v in s["convergence_iters"]], "tol": float(s["convergence_tol"])},
        spline_param=float(s["spline_distance_mm"]),
        return_bias_field=True,
    ).numpy()
    return field


def _write_n4_sidecars(
    image: str | Path,
    out_image: str | Path,
    out_field: str | Path,
    *,
    subject: str,
    params: dict[str, Any],
    grid: Geometry,
    decision: N4Decision,
) -> None:
    """Sidecars of the output image (naming the field file, saying whether N4 ran) and of the bias field."""
    for out, extra in ((out_image, {"bias_field": Path(out_field).name}), (out_field, {})):
        write_sidecar(
            out,
            stage="n4",
            subject=subject,
            inputs=[image],
            parameters=params,
            geometry=grid,
            packages=["antspyx"],
            extra={**extra, **decision.to_json()},
        )


def pass_through(
    image: str | Path, out_image: str | Path, out_field: str | Path, out_qc: str | Path, *, subject: str, title: str
) -> Geometry:
    """N4 switched off: copy ``image`` byte for byte, write a field of ones on its grid and a QC figure of it.

    Returns
    -------
    Geometry
        The image's grid.

    Raises
    ------
    DataError
        When the image is not 3D or has NaN or infinite voxels (the contract of every n4 output).
    """
    img, data = _load_3d(image, subject)
    grid = geometry_of(img)
    copy_file(image, out_image)
    save_like(np.ones(grid.shape[:3], dtype=np.float32), grid, out_field, dtype=np.float32)
    save_image_panel(data, out_qc, spacing=grid.spacing, title=title)
    return grid


def _correct(
    image: str | Path,
    out_image: str | Path,
    out_field: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    s: Mapping[str, Any],
    seed: int,
    decision: N4Decision,
) -> Geometry:
    """Run N4 on ``image`` and write the corrected image, the field and the QC figure of the field."""
    img, data = _load_for_n4(image, subject, decision)
    grid = geometry_of(img)
    field = _fit_bias_field(img, data, s, seed=seed)
    if not np.all(np.isfinite(field)) or float(field.min()) <= 0:
        raise DataError("N4 returned an invalid bias field (non-finite or non-positive)", subject=subject, path=image)
    corrected = (data / field).astype(np.float32)
    save_checked(corrected, grid, out_image, dtype=np.float32, what="N4 output vs input", subject=subject)
    save_like(field.astype(np.float32), grid, out_field, dtype=np.float32)
    save_image_panel(
        field,
        out_qc,
        spacing=grid.spacing,
        cmap="magma",
        title=f"sub-{subject}: N4 bias field of {Path(image).name.split('.')[0]}",
    )
    logger.info("N4: field range %.3f-%.3f", float(field.min()), float(field.max()))
    return grid


def n4_correct(
    image: str | Path,
    out_image: str | Path,
    out_field: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any],
    seed: int,
    sequence: str | None = None,
    modality: ModalityRecord | str = "MR",
) -> Path:
    """Correct the intensity bias of ``image`` with ANTs N4 and save the estimated field, or pass it through.

    Parameters
    ----------
    image
        3D image (converted or co-registered sequence).
    out_image
        Corrected image (float32, same grid, with sidecar); when N4 is off for the sequence, a
        byte-identical copy of ``image`` (same voxels and dtype).
    out_field
        Estimated multiplicative bias field (float32, same grid, with sidecar); all ones when N4 is off.
    out_qc
        PNG of the bias field (of the image when N4 is off).
    subject
        Subject ID (errors, sidecar).
    settings
        ``config["preprocess"]["n4"]``: ``shrink_factor``, ``convergence_iters``,
        ``convergence_tol``, ``spline_distance_mm`` (B-spline mesh spacing), ``mask``
        (``otsu`` | ``none``), ``modalities`` and ``per_sequence`` (whether N4 runs, see
        :func:`n4_decision`); missing keys take the schema's defaults.
    seed
        Seed handed to :func:`medpipe.core.determinism.ants_deterministic`.
    sequence
        Sequence name (config ``sequences``), looked up in ``settings["per_sequence"]``.
    modality
        The sequence's modality record (:func:`medpipe.core.records.read_modality` of the converted
        image), or a modality name (``source: caller``). Default MR, the modality N4 is made for.

    Returns
    -------
    pathlib.Path
        ``out_image``.

    Raises
    ------
    ConfigError
        Naming an invalid settings key, a modality without N4 setting, or N4 switched on for an image
        with negative values (CT Hounsfield units, PET), which it refuses instead of shifting.
    DataError
        For an image that is not 3D, has NaN voxels or no positive voxel, or an invalid fitted field.
    """
    s = with_defaults(settings, "preprocess", "n4")
    record = modality if isinstance(modality, ModalityRecord) else ModalityRecord(str(modality).upper())
    decision = n4_decision(s, sequence=sequence, modality=record)
    logger.info("sequence %s: %s", sequence, decision.reason)
    if decision.run:
        grid = _correct(image, out_image, out_field, out_qc, subject=subject, s=s, seed=seed, decision=decision)
    else:
        title = f"sub-{subject}: {Path(image).name.split('.')[0]}, N4 skipped ({decision.key}: false)"
        grid = pass_through(image, out_image, out_field, out_qc, subject=subject, title=title)
    params = {**s, "seed": int(seed)}
    _write_n4_sidecars(image, out_image, out_field, subject=subject, params=params, grid=grid, decision=decision)
    return Path(out_image)
