"""Domain-shift flags: does a new subject look like the subjects the model was trained on?

Four scores per subject, each compared with the training set (the *shift reference*, written once per
training run and kept in the model bundle):

``intensity``
    Distance of the subject's normalised intensity distribution inside the brain (or body) mask from the
    training subjects': the 1-Wasserstein (earth mover's) distance between quantile functions, i.e. the mean
    absolute difference of the percentiles 1..99 (:class:`medpipe.core.records.IntensityProfile`) from the
    training barycentre (the mean of the training subjects' percentiles, which is the Wasserstein barycentre
    in one dimension); the largest over channels. In the units of the normalised image (SD units after
    z-score). A training subject is scored against the barycentre of the *other* training subjects.
``uncertainty``
    The predict stage's uncertainty score (mean entropy inside the predicted structure).
``volume``
    ``|ln(V_auto / median V_human)|``: how far the automatic mask's volume is from the training labels'
    median volume (an empty mask scores infinity).
``grid``
    Voxel size or field of view of the native reference image outside the training range widened by
    ``spacing_tolerance`` (a rule, not a score).

Calibration on the cross-validation predictions (:func:`calibrate`): a case "fails" when its Dice is below
``dice_fail``; the uncertainty and volume thresholds are the smallest training value that leaves at least
``specificity`` of the non-failing cross-validated cases unflagged (a case is flagged when its score is
strictly above). The intensity distance describes the images, not the model: its threshold leaves
``specificity`` of *all* training subjects unflagged, so it is calibrated even when the model failed on
every cross-validated case (then the other two are not: their flags stay off and the reference says so).
The reference records the threshold with its sensitivity and specificity on the
cross-validation cases; :func:`medpipe.evaluate.shift_table.flag_table` applies it to every subject.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.core.errors import DataError
from medpipe.core.sidecar import write_json

logger = logging.getLogger(__name__)

#: ``format`` tag of the shift reference JSON.
REFERENCE_FORMAT = "medpipe-shift-reference-1"
#: Calibrated scores, in report order.
SCORES = ("intensity", "uncertainty", "volume")
_DIGITS = 6


@dataclass(frozen=True)
class CaseFacts:
    """What the shift flags look at for one subject.

    Attributes
    ----------
    subject, set, site
        From the subject sheet.
    spacing_mm, fov_mm
        Voxel size and field of view (mm) of the native reference image, per array axis.
    profiles
        Channel -> percentiles 1..99 of the normalised intensities inside the mask.
    volume_ml
        Volume of the automatic mask (native grid).
    uncertainty
        The predict stage's uncertainty score, ``None`` when it recorded none.
    dice
        Dice of the automatic vs the human mask, ``None`` for unlabelled subjects.
    human_volume_ml
        Volume of the human mask, ``None`` for unlabelled subjects.
    """

    subject: str
    set: str
    site: str
    spacing_mm: tuple[float, float, float]
    fov_mm: tuple[float, float, float]
    profiles: Mapping[str, tuple[float, ...]]
    volume_ml: float
    uncertainty: float | None
    dice: float | None = None
    human_volume_ml: float | None = None


@dataclass(frozen=True)
class Calibration:
    """Threshold of one score and how it does on the cross-validation cases.

    ``threshold`` is ``None`` (the flag never fires) when no cross-validated case reached ``dice_fail``.
    """

    score: str
    threshold: float | None
    n_good: int
    n_fail: int
    specificity: float | None
    sensitivity: float | None

    def to_json(self) -> dict[str, Any]:
        """JSON form (rounded)."""
        r = rounded
        return {
            "score": self.score,
            "threshold": r(self.threshold),
            "n_good": self.n_good,
            "n_fail": self.n_fail,
            "specificity": r(self.specificity),
            "sensitivity": r(self.sensitivity),
        }


def rounded(value: float | None) -> float | None:
    """``value`` rounded for the JSON records; ``None`` for ``None`` and non-finite values."""
    return None if value is None or not math.isfinite(value) else round(float(value), _DIGITS)


def wasserstein_1(a: Sequence[float], b: Sequence[float]) -> float:
    """1-Wasserstein distance of two distributions given by quantiles at the same levels (mean |a - b|)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise DataError(f"quantile vectors of different or empty shapes: {x.shape} vs {y.shape}")
    return float(np.abs(x - y).mean())


def intensity_distance(
    profiles: Mapping[str, Sequence[float]], training: Mapping[str, Sequence[Sequence[float]]]
) -> float:
    """Largest over channels of the distance from the training barycentre (module docstring)."""
    missing = sorted(set(training) - set(profiles))
    if missing:
        raise DataError(f"intensity profiles lack the channel(s) {missing} of the training set")
    return max(
        wasserstein_1(profiles[c], np.mean(np.asarray(q, dtype=np.float64), axis=0)) for c, q in training.items()
    )


def volume_score(volume_ml: float, median_ml: float) -> float:
    """``|ln(volume / median)|``; infinity for an empty mask."""
    if volume_ml <= 0:
        return math.inf
    return abs(math.log(volume_ml / median_ml))


def calibrate(
    name: str,
    scores: Mapping[str, float | None],
    dice: Mapping[str, float],
    *,
    specificity: float,
    dice_fail: float,
    on_all_cases: bool = False,
) -> Calibration:
    """Threshold of one score on the cross-validation cases (module docstring); ``None`` scores are left out.

    With ``on_all_cases`` the threshold leaves ``specificity`` of every case unflagged, not only of the cases
    with Dice >= ``dice_fail``; the reported specificity and sensitivity are still those for Dice failures.
    """
    cases = [s for s in sorted(dice) if scores.get(s) is not None]
    good = sorted(float(scores[s]) for s in cases if dice[s] >= dice_fail)  # type: ignore[arg-type]
    fail = [float(scores[s]) for s in cases if dice[s] < dice_fail]  # type: ignore[arg-type]
    pool = sorted(good + fail) if on_all_cases else good
    if not pool:
        logger.warning("shift flag %s not calibrated: no cross-validated case with Dice >= %s", name, dice_fail)
        return Calibration(name, None, 0, len(fail), None, None)
    threshold = pool[max(1, math.ceil(specificity * len(pool))) - 1]
    spec = sum(v <= threshold for v in good) / len(good) if good else None
    sens = sum(v > threshold for v in fail) / len(fail) if fail else None
    return Calibration(name, threshold, len(good), len(fail), spec, sens)


def _training_scores(train: Sequence[CaseFacts], median_ml: float) -> dict[str, dict[str, float | None]]:
    """Each training case's scores, the intensity one against the barycentre of the others."""
    channels = sorted(train[0].profiles)
    out: dict[str, dict[str, float | None]] = {k: {} for k in SCORES}
    for case in train:
        others = [c for c in train if c.subject != case.subject] or [case]
        ref = {ch: [c.profiles[ch] for c in others] for ch in channels}
        out["intensity"][case.subject] = intensity_distance(case.profiles, ref)
        out["uncertainty"][case.subject] = case.uncertainty
        out["volume"][case.subject] = volume_score(case.volume_ml, median_ml)
    return out


def shift_reference(train: Sequence[CaseFacts], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The shift reference of a training set (JSON-ready): ranges, profiles, volumes and calibrations.

    Parameters
    ----------
    train
        The labelled training subjects with their cross-validated Dice.
    settings
        ``config["evaluate"]["shift"]`` (``specificity``, ``dice_fail``, ``spacing_tolerance``).

    Raises
    ------
    DataError
        With fewer than two training cases, or a case without Dice or human volume (naming it).
    """
    if len(train) < 2:
        raise DataError(f"the shift reference needs at least two training subjects, got {len(train)}")
    for case in train:
        if case.dice is None or not case.human_volume_ml:
            raise DataError("training subject has no cross-validated Dice or an empty human mask", subject=case.subject)
    median_ml = float(np.median([c.human_volume_ml for c in train]))
    scores = _training_scores(train, median_ml)
    dice = {c.subject: float(c.dice) for c in train}  # type: ignore[arg-type]
    kw = {"specificity": float(settings["specificity"]), "dice_fail": float(settings["dice_fail"])}
    calibrations = {k: calibrate(k, scores[k], dice, **kw, on_all_cases=k == "intensity").to_json() for k in SCORES}
    spacing = np.asarray([c.spacing_mm for c in train])
    fov = np.asarray([c.fov_mm for c in train])
    channels = sorted(train[0].profiles)
    return {
        "format": REFERENCE_FORMAT,
        "settings": {k: float(settings[k]) for k in ("specificity", "dice_fail", "spacing_tolerance")},
        "subjects": [c.subject for c in train],
        "spacing_mm": {"min": _rounded_list(spacing.min(axis=0)), "max": _rounded_list(spacing.max(axis=0))},
        "fov_mm": {"min": _rounded_list(fov.min(axis=0)), "max": _rounded_list(fov.max(axis=0))},
        "median_human_volume_ml": round(median_ml, _DIGITS),
        "profiles": {ch: [list(c.profiles[ch]) for c in train] for ch in channels},
        "calibration": calibrations,
        "cv_scores": {k: {s: rounded(v) for s, v in scores[k].items()} for k in SCORES},
    }


def _rounded_list(values: Any) -> list[float]:
    return [round(float(v), _DIGITS) for v in values]


def write_reference(reference: Mapping[str, Any], path: str | Path) -> Path:
    """Write a shift reference JSON (stable bytes)."""
    return write_json(dict(reference), path)


def read_reference(path: str | Path) -> dict[str, Any]:
    """Read a shift reference written by :func:`write_reference`, refusing another format (naming the file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the shift reference: {exc}", path=path) from exc
    if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"not a shift reference (format {got!r}, expected {REFERENCE_FORMAT!r})", path=path)
    return data
