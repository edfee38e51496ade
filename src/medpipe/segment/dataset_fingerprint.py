"""Dataset fingerprint for planning: what the labelled training subjects look like before resampling.

The planner (:mod:`.plan`) turns it into the network grid, patch, network and loss. It follows nnU-Net v2's
dataset fingerprint (``nnunetv2/experiment_planning/dataset_fingerprint/fingerprint_extractor.py``,
``DatasetFingerprintExtractor.analyze_case`` and ``run``) and adds the label statistics of the reference
study's strategy flowchart:

* per subject: voxel size, image size, image size after cropping to the body (the bounding box of the voxels
  that are nonzero in any channel, nnU-Net's ``crop_to_nonzero``; filling holes as nnU-Net does cannot
  change a bounding box), and per foreground class its voxel count, its share of the cropped image, its
  connected components (26-connectivity, ``cc3d``) and its elongation (below);
* per channel: the modality and the foreground intensity distribution (voxels with label > 0; mean, SD,
  median, 0.5th and 99.5th percentiles), pooled over subjects from at most
  :data:`~medpipe.segment.fingerprint.FG_SAMPLES_PER_CASE` evenly spaced voxels per subject (no random draw:
  nnU-Net draws 10,000 with replacement).

Elongation of a class is ``sqrt(l1 / l2)``, ``l1 >= l2`` the two largest eigenvalues of the covariance of its
voxel positions in mm (each plus ``min_spacing**2 / 12``, the variance of one voxel): about ``L / (1.7 r)`` for a
straight tube of length ``L`` and radius ``r``, about 1 for a ball or a plate. A curved tube reads lower.

Unlike :mod:`.fingerprint` (the training fingerprint a model bundle records, computed on the network grid),
this one is computed on the images that go into resampling, whose grid the plan decides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cc3d
import numpy as np
import numpy.typing as npt

from medpipe.core.errors import DataError
from medpipe.core.geometry import check_same_grid, geometry_of
from medpipe.core.io import load_nifti
from medpipe.segment.data import load_image_stack
from medpipe.segment.fingerprint import FG_SAMPLES_PER_CASE, ChannelIntensity, channel_stats, even_sample

logger = logging.getLogger(__name__)

#: ``format`` tag of :meth:`DatasetFingerprint.to_json`.
FORMAT = "medpipe-dataset-fingerprint-1"
#: Voxels of a class used for its elongation (evenly spaced).
_SHAPE_SAMPLES = 10_000
_DIGITS = 6


@dataclass(frozen=True)
class SubjectFingerprint:
    """Geometry and label statistics of one training subject.

    Attributes
    ----------
    subject
        Subject ID.
    spacing_mm, shape
        Voxel size (mm) and image size (voxels) per array axis.
    shape_after_crop
        Size of the bounding box of the voxels that are nonzero in any channel.
    class_voxels, class_share, class_components, class_elongation
        Per foreground class ``1..n_classes-1``: voxel count, share of the cropped image's voxels, number of
        connected components (26-connectivity) and elongation (``None`` when the class is absent).
    """

    subject: str
    spacing_mm: tuple[float, ...]
    shape: tuple[int, ...]
    shape_after_crop: tuple[int, ...]
    class_voxels: tuple[int, ...]
    class_share: tuple[float, ...]
    class_components: tuple[int, ...]
    class_elongation: tuple[float | None, ...]


@dataclass(frozen=True)
class DatasetFingerprint:
    """Fingerprint of the labelled training subjects (input of :func:`medpipe.segment.plan.make_plan`).

    Attributes
    ----------
    channels, modalities
        Channel (sequence) names in network input order and their modality (``CT``, ``MR``, ``PT``, ...).
    n_classes
        Classes, background included (largest label value + 1).
    subjects
        One :class:`SubjectFingerprint` per subject.
    intensities
        Foreground intensities per channel (raw values, before normalisation).
    """

    channels: tuple[str, ...]
    modalities: tuple[str, ...]
    n_classes: int
    subjects: tuple[SubjectFingerprint, ...]
    intensities: tuple[ChannelIntensity, ...]

    @property
    def spacings(self) -> npt.NDArray[np.float64]:
        """``(n_subjects, 3)`` voxel sizes (mm)."""
        return np.asarray([s.spacing_mm for s in self.subjects], dtype=np.float64)

    @property
    def shapes_after_crop(self) -> npt.NDArray[np.float64]:
        """``(n_subjects, 3)`` image sizes after cropping to the body."""
        return np.asarray([s.shape_after_crop for s in self.subjects], dtype=np.float64)

    @property
    def shapes(self) -> npt.NDArray[np.float64]:
        """``(n_subjects, 3)`` image sizes before cropping."""
        return np.asarray([s.shape for s in self.subjects], dtype=np.float64)

    def median_class_share(self) -> list[float]:
        """Median share of the cropped image per foreground class (over subjects)."""
        shares = np.asarray([s.class_share for s in self.subjects], dtype=np.float64)
        return [round(float(v), _DIGITS) for v in np.median(shares, axis=0)]

    def median_elongation(self) -> list[float | None]:
        """Median elongation per foreground class over the subjects that have it (``None``: nowhere)."""
        out: list[float | None] = []
        for c in range(self.n_classes - 1):
            values = [float(e) for s in self.subjects if (e := s.class_elongation[c]) is not None]
            out.append(round(float(np.median(values)), 3) if values else None)
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (lists for tuples), with a ``format`` tag."""
        return {
            "format": FORMAT,
            "channels": list(self.channels),
            "modalities": list(self.modalities),
            "n_classes": self.n_classes,
            "subjects": [asdict(s) for s in self.subjects],
            "intensities": [asdict(c) for c in self.intensities],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatasetFingerprint:
        """Inverse of :meth:`to_json` (:class:`DataError` on another format, ``KeyError`` if malformed)."""
        if data.get("format") != FORMAT:
            raise DataError(f"not a dataset fingerprint: format {data.get('format')!r}, expected {FORMAT!r}")
        subjects = tuple(
            SubjectFingerprint(
                subject=str(s["subject"]),
                spacing_mm=tuple(float(v) for v in s["spacing_mm"]),
                shape=tuple(int(v) for v in s["shape"]),
                shape_after_crop=tuple(int(v) for v in s["shape_after_crop"]),
                class_voxels=tuple(int(v) for v in s["class_voxels"]),
                class_share=tuple(float(v) for v in s["class_share"]),
                class_components=tuple(int(v) for v in s["class_components"]),
                class_elongation=tuple(None if v is None else float(v) for v in s["class_elongation"]),
            )
            for s in data["subjects"]
        )
        return cls(
            channels=tuple(data["channels"]),
            modalities=tuple(data["modalities"]),
            n_classes=int(data["n_classes"]),
            subjects=subjects,
            intensities=tuple(ChannelIntensity(**c) for c in data["intensities"]),
        )


def crop_box(data: npt.NDArray[Any]) -> tuple[slice, ...]:
    """Bounding box of the voxels that are nonzero in any channel of ``data`` ``(C, X, Y, Z)``.

    nnU-Net's ``crop_to_nonzero`` (``nnunetv2/preprocessing/cropping/cropping.py``) fills holes first, which
    cannot change the box. An image that is zero everywhere has no body: :class:`DataError` from the caller.
    """
    nonzero = np.any(data != 0, axis=0)
    idx = [np.flatnonzero(np.any(nonzero, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(i.size == 0 for i in idx):
        return ()
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def elongation(mask: npt.NDArray[np.bool_], spacing: Sequence[float]) -> float | None:
    """``sqrt(l1 / l2)`` of the voxel positions (mm) of ``mask`` (module docstring); ``None`` when empty."""
    coords = np.argwhere(mask)
    if coords.shape[0] == 0:
        return None
    if coords.shape[0] > _SHAPE_SAMPLES:
        coords = coords[np.linspace(0, coords.shape[0] - 1, _SHAPE_SAMPLES).round().astype(np.int64)]
    pts = coords.astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    cov = np.atleast_2d(np.cov(pts, rowvar=False)) if pts.shape[0] > 1 else np.zeros((3, 3))
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1] + min(spacing) ** 2 / 12.0
    return round(float(np.sqrt(eig[0] / eig[1])), 3)


def _label_array(path: str, *, subject: str) -> tuple[npt.NDArray[np.int64], Any]:
    """Integer label map of ``path`` and its image (non-integer or negative values: :class:`DataError`)."""
    img = load_nifti(path, subject=subject)
    raw = np.asarray(img.dataobj)
    if not np.all(np.isfinite(raw)) or np.any(raw < 0) or np.any(raw != np.round(raw)):
        raise DataError("label values must be class indices 0, 1, 2, ...", subject=subject, path=path)
    return raw.astype(np.int64), img


def _check_channel_counts(images: Sequence[Sequence[str]], subjects: Sequence[str], channels: Sequence[str]) -> None:
    """Every subject has one image per channel; the first that has not is named, with the counts seen."""
    counts = sorted({len(p) for p in images})
    for subject, paths in zip(subjects, images, strict=True):
        if len(paths) != len(channels):
            raise DataError(
                f"{len(paths)} images, but the channels are {list(channels)} ({len(channels)}); channel counts "
                f"in this cohort: {counts}. Every training subject needs the same sequences",
                subject=subject,
                path=paths[0] if paths else None,
            )


def _subject_fingerprint(
    subject: str, paths: Sequence[str], label: str, n_classes: int
) -> tuple[SubjectFingerprint, list[npt.NDArray[np.float32]]]:
    """One subject's record and its evenly sampled foreground intensities per channel."""
    data, grid = load_image_stack(list(paths), subject=subject)
    lab, limg = _label_array(label, subject=subject)
    check_same_grid(grid, geometry_of(limg), what="label vs image", subject=subject, path=label)
    box = crop_box(data)
    if not box:
        raise DataError("every channel is zero everywhere: no body to crop to", subject=subject, path=paths[0])
    cropped = tuple(s.stop - s.start for s in box)
    n_crop = float(np.prod(cropped))
    voxels, shares, comps, elong = [], [], [], []
    for c in range(1, n_classes):
        mask = lab == c
        n = int(mask.sum())
        voxels.append(n)
        shares.append(round(n / n_crop, _DIGITS))
        comps.append(int(cc3d.connected_components(mask, connectivity=26, return_N=True)[1]) if n else 0)
        elong.append(elongation(mask, grid.spacing))
    fg = lab > 0
    samples = [even_sample(data[c][fg], FG_SAMPLES_PER_CASE) for c in range(data.shape[0])]
    record = SubjectFingerprint(
        subject=subject,
        spacing_mm=tuple(round(float(v), _DIGITS) for v in grid.spacing),
        shape=tuple(int(v) for v in grid.shape[:3]),
        shape_after_crop=cropped,
        class_voxels=tuple(voxels),
        class_share=tuple(shares),
        class_components=tuple(comps),
        class_elongation=tuple(elong),
    )
    return record, samples


def _max_label(labels: Sequence[str], subjects: Sequence[str]) -> int:
    """Largest label value over the cohort (:class:`DataError` when no label has a foreground voxel)."""
    top = max(int(_label_array(p, subject=s)[0].max()) for s, p in zip(subjects, labels, strict=True))
    if top < 1:
        raise DataError(f"none of the {len(labels)} training labels has a foreground voxel")
    return top


def compute_dataset_fingerprint(
    images: Sequence[Sequence[str]],
    labels: Sequence[str],
    *,
    subjects: Sequence[str],
    channels: Sequence[str],
    modalities: Sequence[str],
) -> DatasetFingerprint:
    """Fingerprint of the labelled training subjects, read one subject at a time.

    Parameters
    ----------
    images
        Per subject, its images (one NIfTI per channel, in channel order, on one grid).
    labels
        Per subject, its label map on the images' grid (0 background, 1.. classes).
    subjects
        Subject IDs, in the order of ``images`` (named in errors).
    channels, modalities
        Channel (sequence) names and their modalities (``CT``, ``MR``, ``PT``, ...), one per channel.

    Returns
    -------
    DatasetFingerprint

    Raises
    ------
    DataError
        When the lists differ in length, a subject has another number of images than ``channels`` (naming it),
        a label value is not a class index, no label has a foreground voxel, or an image is zero everywhere;
        :class:`medpipe.core.errors.GeometryError` when a label is not on its images' grid.
    """
    if not (len(images) == len(labels) == len(subjects)) or not subjects:
        raise DataError(f"{len(subjects)} subjects, {len(images)} image lists and {len(labels)} labels given")
    if len(modalities) != len(channels):
        raise DataError(f"{len(modalities)} modalities {list(modalities)} for channels {list(channels)}")
    _check_channel_counts(images, subjects, channels)
    n_classes = _max_label(labels, subjects) + 1
    records: list[SubjectFingerprint] = []
    samples: list[list[npt.NDArray[np.float32]]] = [[] for _ in channels]
    for subject, paths, label in zip(subjects, images, labels, strict=True):
        record, sampled = _subject_fingerprint(subject, paths, label, n_classes)
        records.append(record)
        for c, values in enumerate(sampled):
            samples[c].append(values)
    fp = DatasetFingerprint(
        channels=tuple(channels),
        modalities=tuple(modalities),
        n_classes=n_classes,
        subjects=tuple(records),
        intensities=tuple(
            channel_stats(name, np.concatenate(samples[c]).astype(np.float64)) for c, name in enumerate(channels)
        ),
    )
    logger.info(
        "dataset fingerprint of %d subjects: median spacing %s mm, median cropped size %s, class shares %s",
        len(records),
        np.median(fp.spacings, axis=0).round(3).tolist(),
        np.median(fp.shapes_after_crop, axis=0).tolist(),
        fp.median_class_share(),
    )
    return fp
