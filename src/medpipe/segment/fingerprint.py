"""Training fingerprint: what the images a model was trained on looked like (nnU-Net's dataset fingerprint).

Computed from the training images on the network grid (the normalised channels) and their labels: the
range of voxel sizes and image sizes, and per channel the intensity distribution inside the label's
foreground (mean, SD, median, 0.5th and 99.5th percentiles). A bundle records it so that a later run can
tell whether its images resemble the training data. Foreground voxels are sampled evenly (at most
:data:`FG_SAMPLES_PER_CASE` per case and channel, no random draw), so the fingerprint is the same on
every run and its memory does not grow with the image size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.core.errors import DataError
from medpipe.core.geometry import check_same_grid, geometry_of
from medpipe.core.io import load_nifti

logger = logging.getLogger(__name__)

#: Foreground voxels sampled per case and channel (nnU-Net samples 10,000 too).
FG_SAMPLES_PER_CASE = 10_000
#: Decimal places kept in the JSON record (stable bytes on re-runs).
_DIGITS = 6


@dataclass(frozen=True)
class ChannelIntensity:
    """Intensities of one channel inside the training labels' foreground.

    Attributes
    ----------
    channel
        Sequence name (channel order of the network input).
    n_voxels
        Foreground voxels sampled over all cases.
    mean, sd, median, percentile_00_5, percentile_99_5
        Statistics of the sampled voxels (after normalisation: the values the network saw).
    """

    channel: str
    n_voxels: int
    mean: float
    sd: float
    median: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class TrainingFingerprint:
    """Image size, voxel size and foreground intensities of the training cases.

    Attributes
    ----------
    n_cases
        Training cases (subjects) it was computed from.
    spacing_mm_min, spacing_mm_max
        Smallest and largest voxel size per array axis (mm).
    shape_min, shape_max
        Smallest and largest image size per array axis (voxels).
    channels
        One :class:`ChannelIntensity` per input channel, in channel order.
    """

    n_cases: int
    spacing_mm_min: tuple[float, float, float]
    spacing_mm_max: tuple[float, float, float]
    shape_min: tuple[int, int, int]
    shape_max: tuple[int, int, int]
    channels: tuple[ChannelIntensity, ...]

    def to_json(self) -> dict[str, Any]:
        """The fingerprint as a JSON-ready dict (keys: the field names)."""
        data = asdict(self)
        data["channels"] = [asdict(c) for c in self.channels]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingFingerprint:
        """Inverse of :meth:`to_json` (``KeyError``, ``TypeError`` or ``ValueError`` on a malformed record)."""
        return cls(
            n_cases=int(data["n_cases"]),
            spacing_mm_min=_floats3(np.asarray(data["spacing_mm_min"], dtype=np.float64)),
            spacing_mm_max=_floats3(np.asarray(data["spacing_mm_max"], dtype=np.float64)),
            shape_min=_ints3(np.asarray(data["shape_min"], dtype=np.int64)),
            shape_max=_ints3(np.asarray(data["shape_max"], dtype=np.int64)),
            channels=tuple(ChannelIntensity(**c) for c in data["channels"]),
        )


def even_sample(values: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
    """At most ``n`` values taken at evenly spaced positions (all of them when there are fewer)."""
    if values.size <= n:
        return values
    return values[np.linspace(0, values.size - 1, n).round().astype(np.int64)]


def _floats3(v: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    return (round(float(v[0]), _DIGITS), round(float(v[1]), _DIGITS), round(float(v[2]), _DIGITS))


def _ints3(v: npt.NDArray[np.int64]) -> tuple[int, int, int]:
    return (int(v[0]), int(v[1]), int(v[2]))


def channel_stats(channel: str, values: npt.NDArray[np.float64]) -> ChannelIntensity:
    """Statistics of one channel's pooled foreground sample."""
    lo, med, hi = np.percentile(values, [0.5, 50.0, 99.5])
    return ChannelIntensity(
        channel=channel,
        n_voxels=int(values.size),
        mean=round(float(values.mean()), _DIGITS),
        sd=round(float(values.std()), _DIGITS),
        median=round(float(med), _DIGITS),
        percentile_00_5=round(float(lo), _DIGITS),
        percentile_99_5=round(float(hi), _DIGITS),
    )


def compute_fingerprint(
    images: Sequence[Sequence[str]], labels: Sequence[str], *, subjects: Sequence[str], channels: Sequence[str]
) -> TrainingFingerprint:
    """Fingerprint of the training cases, read one case at a time.

    Parameters
    ----------
    images
        Per subject, its images on the network grid, one per channel in channel order.
    labels
        Per subject, its label map on the same grid (foreground: values > 0).
    subjects
        Subject IDs in the order of ``images`` (error messages).
    channels
        Channel (sequence) names, as many as each subject has images.

    Returns
    -------
    TrainingFingerprint
        Voxel and image size ranges and per-channel foreground intensities.

    Raises
    ------
    DataError
        When a subject has another number of images than ``channels``, when no label has a foreground
        voxel, or (:class:`medpipe.core.errors.GeometryError`) when a label is not on its images' grid.
    """
    if not (len(images) == len(labels) == len(subjects)) or not subjects:
        raise DataError(f"{len(subjects)} subjects, {len(images)} image lists and {len(labels)} labels given")
    samples: list[list[npt.NDArray[np.float32]]] = [[] for _ in channels]
    spacings, shapes = [], []
    for subject, paths, label in zip(subjects, images, labels, strict=True):
        if len(paths) != len(channels):
            raise DataError(
                f"{len(paths)} images for channels {list(channels)}", subject=subject, path=paths[0] if paths else None
            )
        from medpipe.segment.data import load_image_stack  # torch: only when a fingerprint is computed

        data, grid = load_image_stack(list(paths), subject=subject)
        label_img = load_nifti(label, subject=subject)
        check_same_grid(grid, geometry_of(label_img), what="label vs image", subject=subject, path=label)
        foreground = np.asarray(label_img.dataobj) > 0
        for c in range(len(channels)):
            samples[c].append(even_sample(data[c][foreground], FG_SAMPLES_PER_CASE))
        spacings.append(grid.spacing)
        shapes.append(tuple(int(n) for n in grid.shape[:3]))
    if not any(s.size for s in samples[0]):
        raise DataError(f"none of the {len(labels)} training labels has a foreground voxel")
    sp, sh = np.asarray(spacings, dtype=np.float64), np.asarray(shapes, dtype=np.int64)
    fingerprint = TrainingFingerprint(
        n_cases=len(subjects),
        spacing_mm_min=_floats3(sp.min(axis=0)),
        spacing_mm_max=_floats3(sp.max(axis=0)),
        shape_min=_ints3(sh.min(axis=0)),
        shape_max=_ints3(sh.max(axis=0)),
        channels=tuple(
            channel_stats(name, np.concatenate(samples[c]).astype(np.float64)) for c, name in enumerate(channels)
        ),
    )
    logger.info(
        "fingerprint of %d cases: spacing %s-%s mm, size %s-%s",
        fingerprint.n_cases,
        list(fingerprint.spacing_mm_min),
        list(fingerprint.spacing_mm_max),
        list(fingerprint.shape_min),
        list(fingerprint.shape_max),
    )
    return fingerprint
