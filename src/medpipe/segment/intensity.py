"""Network-input normalisation fitted on a fold's training subjects (nnU-Net's CTNormalization).

A channel normalised with ``preprocess.normalise.method: ct_foreground`` leaves the normalise stage in its own
unit (Hounsfield units, resampled onto the training grid). The statistics that turn it into network input come
from the training subjects of the fold, not from the subject itself (a per-subject z-score would remove exactly
what HU carry): every foreground voxel (label > 0) of those subjects gives the ``percentiles`` (default 0.5 and
99.5 %) to clip to and the mean and standard deviation to z-score with, as nnU-Net's ``CTNormalization`` does
with its dataset fingerprint, but per fold, so that the held-out subjects never inform their own input.

* :func:`channel_methods` reads each channel's method from the normalise sidecars (the record the normalise
  stage writes and training reads; every training subject must agree).
* :func:`fit_foreground` fits one :class:`ForegroundNormalisation` per such channel; ``train`` stores them in
  the model (``meta["input_normalisation"]``, hence in the bundle) and applies them to its cases.
* :func:`apply_to_stack` applies a model's stored statistics to a case before inference (each fold model of
  an ensemble its own).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.core.errors import DataError
from medpipe.core.sidecar import read_sidecar, sidecar_path
from medpipe.segment.data import Case

logger = logging.getLogger(__name__)

#: The normalise method whose statistics are fitted per fold here (the schema's enum holds it too).
FOLD_METHOD = "ct_foreground"


@dataclass(frozen=True)
class ForegroundNormalisation:
    """Clip to ``[low, high]``, then ``(x - mean) / sd``; fitted on ``n_voxels`` foreground voxels."""

    channel: int
    sequence: str
    percentiles: tuple[float, float]
    low: float
    high: float
    mean: float
    sd: float
    n_voxels: int
    n_subjects: int

    def apply(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """The normalised channel (float32)."""
        out = (np.clip(x.astype(np.float64), self.low, self.high) - self.mean) / max(self.sd, 1e-8)
        return out.astype(np.float32)

    def record(self) -> dict[str, Any]:
        """JSON-ready form (model metadata, sidecars)."""
        data = asdict(self)
        data["percentiles"] = list(self.percentiles)
        return {"method": FOLD_METHOD, **data}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> ForegroundNormalisation:
        """Inverse of :meth:`record`."""
        fields = {k: v for k, v in data.items() if k != "method"}
        fields["percentiles"] = tuple(float(v) for v in fields["percentiles"])
        return cls(**fields)


def _has_sidecar(path: str) -> bool:
    return sidecar_path(path).is_file()


def channel_methods(images: Sequence[Sequence[str]], subjects: Sequence[str]) -> list[dict[str, Any]]:
    """Per channel: the normalise parameters (``method``, ``percentiles``) its sidecars record (none: ``{}``).

    Raises
    ------
    DataError
        When two training subjects' images of one channel were normalised with different methods.
    """
    methods: list[dict[str, Any]] = []
    for c in range(len(images[0])):
        first: dict[str, Any] | None = None
        for subject, imgs in zip(subjects, images, strict=True):
            # Images without a sidecar (made outside the workflow) count as network-ready.
            params = read_sidecar(imgs[c], subject=subject).get("parameters", {}) if _has_sidecar(imgs[c]) else {}
            entry = {"method": params.get("method"), "percentiles": params.get("percentiles")}
            if first is None:
                first = entry
            elif entry["method"] != first["method"]:
                raise DataError(
                    f"channel {c} was normalised with {entry['method']!r} here but {first['method']!r} for "
                    f"subject {subjects[0]}; every training subject needs the same normalisation",
                    subject=subject,
                    path=imgs[c],
                )
        methods.append(first or {})
    return methods


def fit_foreground(
    images: Sequence[npt.NDArray[np.floating[Any]]],
    labels: Sequence[npt.NDArray[Any]],
    methods: Sequence[Mapping[str, Any]],
    sequences: Sequence[str],
    *,
    subjects: Sequence[str],
) -> list[ForegroundNormalisation]:
    """Fit the statistics of every ``ct_foreground`` channel on the foreground of the training subjects.

    Parameters
    ----------
    images
        Per training subject, its ``(C, X, Y, Z)`` stack (the normalise stage's output, HU for such channels).
    labels
        Per training subject, its label map on the same grid (foreground: > 0).
    methods
        :func:`channel_methods` of those subjects.
    sequences
        Channel names (model metadata, messages).
    subjects
        Subject IDs (messages).
    """
    fitted: list[ForegroundNormalisation] = []
    for c, entry in enumerate(methods):
        if entry.get("method") != FOLD_METHOD:
            continue
        voxels = np.concatenate(
            [
                np.asarray(img[c], np.float64)[np.asarray(lab).reshape(img[c].shape) > 0]
                for img, lab in zip(images, labels, strict=True)
            ]
        )
        if voxels.size < 2:
            raise DataError(f"channel {sequences[c]!r}: the training labels hold {voxels.size} foreground voxels")
        lo_p, hi_p = (float(v) for v in entry.get("percentiles") or (0.5, 99.5))
        low, high = (float(v) for v in np.percentile(voxels, [lo_p, hi_p]))
        # As nnU-Net: mean and SD of the foreground voxels as they are (not clipped), applied after the clip.
        mean, sd = float(voxels.mean()), float(voxels.std())
        if not sd > 0:
            raise DataError(
                f"channel {sequences[c]!r}: foreground intensities are constant ({mean:.4g}) over {subjects}"
            )
        fit = ForegroundNormalisation(c, sequences[c], (lo_p, hi_p), low, high, mean, sd, int(voxels.size), len(images))
        logger.info(
            "channel %s: clip to [%.4g, %.4g] (percentiles %s), mean %.4g, sd %.4g; %d foreground voxels, %d subjects",
            sequences[c],
            low,
            high,
            [lo_p, hi_p],
            mean,
            sd,
            voxels.size,
            len(images),
        )
        fitted.append(fit)
    return fitted


def apply_to_stack(stack: npt.NDArray[np.float32], records: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
    """A copy of ``stack`` ``(C, X, Y, Z)`` with a model's stored per-fold statistics applied (none: unchanged)."""
    if not records:
        return stack
    out = stack.copy()
    for data in records:
        fit = ForegroundNormalisation.from_record(data)
        out[fit.channel] = fit.apply(stack[fit.channel])
    return out


def normalise_training_cases(
    cases: Sequence[Case], images: Sequence[Sequence[str]], subjects: Sequence[str]
) -> list[dict[str, Any]]:
    """Fit the per-fold statistics on ``cases`` (the fold's training set), apply them in place, return their records."""
    methods = channel_methods(images, subjects)
    if not any(m.get("method") == FOLD_METHOD for m in methods):
        return []
    labels = []
    for case in cases:
        if case.label is None:
            raise DataError("a training case has no label", subject=case.subject)
        labels.append(case.label)
    fits = fit_foreground(
        [c.image for c in cases], labels, methods, sequence_names(images[0], subjects[0]), subjects=subjects
    )
    records = [f.record() for f in fits]
    for case in cases:
        case.image = apply_to_stack(case.image, records)
    return records


def sequence_names(images: Sequence[str], subject: str) -> list[str]:
    """Channel names from one subject's image files (``sub-X_T1w.nii.gz`` -> ``T1w``)."""
    return [Path(p).name.replace(f"sub-{subject}_", "").split(".")[0] for p in images]
