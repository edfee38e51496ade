"""Intensity normalisation and resampling onto the training grid.

Methods (``settings["method"]``, overridable per sequence in ``settings["per_sequence"]``):

* ``zscore``: ``(x - mean) / sd`` with mean and SD over the brain mask.
* ``percentile``: clip to the ``percentiles`` (default 0.5 and 99.5 %) of the voxels in the mask,
  rescale to [0, 1].
* ``ct_window``: clip to ``window_hu`` (default [-1000, 400]) and rescale to [0, 1].
* ``ct_foreground``: nnU-Net's CT normalisation. This stage keeps the Hounsfield units (it only resamples);
  the clip to the ``percentiles`` of the foreground voxels and the z-score with their mean and SD are fitted on
  the training subjects of each fold by the train job, stored with the model and applied by predict
  (:mod:`medpipe.segment.intensity`).
* ``whitestripe``: WhiteStripe (MR): ``(x - mean) / sd`` over the normal-appearing white matter found
  in the brain mask's histogram, by ``intensity-normalization`` (:mod:`.whitestripe`; ``whitestripe_width``,
  ``whitestripe_contrast``). Its sidecar also records the stripe found (``"whitestripe"``: mean, SD and
  intensity range in the input's units) and the library's version.
* ``none``: intensities unchanged.

Defaults and allowed values of the settings are those of the ``preprocess.normalise`` section of
``config/schemas/config.schema.yaml``; a ``per_sequence`` entry is either a method name or a mapping
overriding any of ``method``, ``percentiles``, ``window_hu``, ``whitestripe_width``,
``whitestripe_contrast`` and ``interpolation`` for that sequence.

Statistics come from the mask; the whole image is transformed (voxels outside the mask are kept).
The normalised image is then resampled (B-spline by default) onto
:func:`medpipe.core.resample.target_grid` of its own grid, which is the reference sequence's grid for
every sequence (co-registration writes on the fixed grid), so all channels share one grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.core.config import normalise_settings
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.geometry import check_finite, check_same_grid, geometry_of
from medpipe.core.io import load_nifti, save_checked
from medpipe.core.qc import save_histogram
from medpipe.core.records import IntensityProfile
from medpipe.core.resample import resample_to_grid, target_grid
from medpipe.core.sidecar import write_sidecar
from medpipe.preprocess.whitestripe import PACKAGE, fit_whitestripe

logger = logging.getLogger(__name__)


def _zscore(
    x: npt.NDArray[np.float64], inside: npt.NDArray[np.float64], settings: Mapping[str, Any], **where: Any
) -> npt.NDArray[np.float64]:
    """``(x - mean) / sd`` with mean and SD over the mask (``where``: subject and path named in errors)."""
    sd = float(inside.std())
    if sd <= 0:
        raise DataError("intensities are constant inside the mask; z-score is undefined", **where)
    out: npt.NDArray[np.float64] = (x - float(inside.mean())) / sd
    return out


def _percentile(
    x: npt.NDArray[np.float64], inside: npt.NDArray[np.float64], settings: Mapping[str, Any], **where: Any
) -> npt.NDArray[np.float64]:
    """Clip to the ``percentiles`` of the voxels in the mask and rescale to [0, 1]."""
    lo, hi = np.percentile(inside, [float(v) for v in settings["percentiles"]])
    if hi <= lo:
        raise DataError(f"percentiles {settings['percentiles']} coincide ({lo:.4g}); cannot rescale", **where)
    out: npt.NDArray[np.float64] = (np.clip(x, lo, hi) - lo) / (hi - lo)
    return out


def _ct_window(
    x: npt.NDArray[np.float64], inside: npt.NDArray[np.float64], settings: Mapping[str, Any], **where: Any
) -> npt.NDArray[np.float64]:
    """Clip to ``window_hu`` and rescale to [0, 1]."""
    lo, hi = (float(v) for v in settings["window_hu"])
    if hi <= lo:
        raise ConfigError(f"window_hu must be [low, high] with low < high, got {settings['window_hu']}")
    out: npt.NDArray[np.float64] = (np.clip(x, lo, hi) - lo) / (hi - lo)
    return out


def _unchanged(
    x: npt.NDArray[np.float64], inside: npt.NDArray[np.float64], settings: Mapping[str, Any], **where: Any
) -> npt.NDArray[np.float64]:
    """Intensities unchanged (``method: none``)."""
    return x


def _whitestripe(
    x: npt.NDArray[np.float64], inside: npt.NDArray[np.float64], settings: Mapping[str, Any], **where: Any
) -> npt.NDArray[np.float32]:
    """WhiteStripe fitted on the voxels in the mask, applied to ``x`` (:mod:`medpipe.preprocess.whitestripe`)."""
    return fit_whitestripe(inside, None, settings, **where).apply(x)


#: Normalisation per value of ``preprocess.normalise.method`` (keys: the schema's enum, checked by the tests).
METHODS: dict[str, Callable[..., npt.NDArray[np.floating[Any]]]] = {
    "zscore": _zscore,
    "percentile": _percentile,
    "ct_window": _ct_window,
    "ct_foreground": _unchanged,  # fitted per fold by the train job (medpipe.segment.intensity)
    "whitestripe": _whitestripe,
    "none": _unchanged,
}


def normalise_array(
    data: npt.NDArray[Any],
    mask: npt.NDArray[Any],
    settings: Mapping[str, Any],
    *,
    subject: str | None = None,
    path: str | Path | None = None,
) -> npt.NDArray[np.float32]:
    """Normalise ``data`` with statistics over ``mask > 0`` (see the module docstring for methods).

    ``settings`` are resolved ones (:func:`medpipe.core.config.normalise_settings`).

    Raises
    ------
    DataError
        When the method is undefined for the intensities inside the mask (constant for ``zscore``,
        coinciding percentiles for ``percentile``, no usable white stripe for ``whitestripe``).
    """
    x = np.asarray(data, dtype=np.float64)
    inside = x[np.asarray(mask) > 0]
    return METHODS[settings["method"]](x, inside, settings, subject=subject, path=path).astype(np.float32)


def _normalise_with_record(
    data: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], s: Mapping[str, Any], *, subject: str, path: str | Path
) -> tuple[npt.NDArray[np.float32], dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """The normalised image and its sidecar's parameters, extra facts and packages.

    WhiteStripe is fitted on the image with the brain mask as the library's mask (the same stripe as
    :func:`normalise_array`'s), and its stripe and library version join the sidecar. The ``whitestripe_*``
    keys are recorded only for that method, so the other methods' sidecars stay as they were before it
    was added.
    """
    if s["method"] != "whitestripe":
        params = {k: v for k, v in s.items() if not k.startswith("whitestripe_")}
        return normalise_array(data, mask, s, subject=subject, path=path), params, {}, ()
    stripe = fit_whitestripe(data, mask, s, subject=subject, path=path)
    return stripe.apply(data), dict(s), {"whitestripe": stripe.record()}, (PACKAGE,)


def normalise_image(
    image: str | Path,
    brainmask: str | Path,
    out_image: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any],
    target_spacing_mm: Sequence[float] | None,
    sequence: str | None = None,
) -> Path:
    """Normalise ``image`` within ``brainmask`` and resample it onto the training grid.

    Parameters
    ----------
    image
        N4-corrected sequence on the reference grid.
    brainmask
        Brain mask on the same grid (all ones for non-brain data).
    out_image
        Normalised image on the training grid (float32, with sidecar).
    out_qc
        Histogram PNG of the intensities inside the mask before and after.
    subject
        Subject ID (errors, sidecar).
    settings
        ``config["preprocess"]["normalise"]``; missing keys take the schema's defaults.
    target_spacing_mm
        ``config["preprocess"]["target_spacing_mm"]``; ``None`` keeps the native grid.
    sequence
        Sequence name, to apply ``settings["per_sequence"][sequence]``.

    Returns
    -------
    pathlib.Path
        ``out_image``.
    """
    s = normalise_settings(settings, sequence)
    img = load_nifti(image, subject=subject)
    mask_img = load_nifti(brainmask, subject=subject)
    grid = geometry_of(img)
    check_same_grid(grid, geometry_of(mask_img), what="image vs brain mask", subject=subject, path=brainmask)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(f"expected a 3D image, got shape {data.shape}", subject=subject, path=image)
    check_finite(data, subject=subject, path=image)
    mask = np.asarray(mask_img.dataobj) > 0
    if not mask.any():
        raise DataError("brain mask is empty; cannot compute normalisation statistics", subject=subject, path=brainmask)
    normalised, params, record, packages = _normalise_with_record(data, mask, s, subject=subject, path=image)
    target = target_grid(grid, target_spacing_mm)
    if target is grid:
        out = normalised
    else:
        out = resample_to_grid(normalised, target, interpolation=s["interpolation"], source=grid).astype(np.float32)
    save_checked(out, target, out_image, dtype=np.float32, what="normalised vs target grid", subject=subject)
    save_histogram(
        {"before (in mask)": data[mask], "after (in mask)": normalised[mask]},
        out_qc,
        title=f"sub-{subject}: {sequence or Path(image).name.split('.')[0]} {s['method']}",
        xlabel="intensity",
    )
    write_sidecar(
        out_image,
        stage="normalise",
        subject=subject,
        inputs=[image, brainmask],
        parameters={
            **params,
            "target_spacing_mm": None if target_spacing_mm is None else [float(v) for v in target_spacing_mm],
        },
        geometry=target,
        packages=packages,
        extra={**record, **IntensityProfile.of(normalised[mask]).to_json()},  # read by the shift flags
    )
    logger.info(
        "normalised (%s) onto grid %s, spacing %s",
        s["method"],
        target.shape,
        [round(v, 3) for v in target.spacing],
    )
    return Path(out_image)
