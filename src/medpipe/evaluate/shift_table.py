"""Domain-shift flags of every subject (:mod:`.shift`): the table, how the flags do per set, review records.

:func:`flag_table` scores every subject against a shift reference and flags it when a calibrated score is
above its threshold or its native grid is outside the training range; :func:`flag_performance` counts,
per set and flag, the flagged subjects and (where Dice is known) the sensitivity and specificity for
catching a case with Dice below ``dice_fail``. The training set is scored as in the calibration (its
cross-validated predictions; the intensity distance against the other training subjects), so its row is
the calibration's in-sample performance; test and external rows are out of sample.
:func:`write_review_records` writes one JSON record per subject that the review list reads
(:func:`medpipe.audit.review.read_flag`: keys ``subject``, ``stage``, ``flag``, ``reason``, ``score``,
``threshold``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.core.errors import DataError
from medpipe.core.sidecar import write_json
from medpipe.evaluate.shift import SCORES, CaseFacts, intensity_distance, rounded, volume_score

logger = logging.getLogger(__name__)

#: Flags in table order: the calibrated scores, then the grid rule, then any of them.
FLAGS = (*SCORES, "grid", "any")
#: Stage named in the review list.
REVIEW_STAGE = "shift"


def _grid_reasons(case: CaseFacts, reference: Mapping[str, Any]) -> list[str]:
    tol = float(reference["settings"]["spacing_tolerance"])
    reasons = []
    for what, values in (("spacing_mm", case.spacing_mm), ("fov_mm", case.fov_mm)):
        lo, hi = reference[what]["min"], reference[what]["max"]
        for axis, (v, a, b) in enumerate(zip(values, lo, hi, strict=True)):
            if not a * (1 - tol) <= v <= b * (1 + tol):
                name = "voxel size" if what == "spacing_mm" else "field of view"
                reasons.append(f"{name} {v:.4g} mm on axis {axis} outside the training range {a:.4g}-{b:.4g} mm")
    return reasons


def _scores(case: CaseFacts, reference: Mapping[str, Any]) -> dict[str, float | None]:
    """The subject's scores; training subjects keep their calibration (cross-validation) scores."""
    cv = reference["cv_scores"]
    if case.subject in reference["subjects"]:
        out = {k: cv[k].get(case.subject) for k in SCORES}
        if out["volume"] is None:  # an empty cross-validated mask was stored as null
            out["volume"] = volume_score(case.volume_ml, float(reference["median_human_volume_ml"]))
        return out
    return {
        "intensity": intensity_distance(case.profiles, reference["profiles"]),
        "uncertainty": case.uncertainty,
        "volume": volume_score(case.volume_ml, float(reference["median_human_volume_ml"])),
    }


def _reason(name: str, score: float, threshold: float) -> str:
    what = {
        "intensity": "intensity distribution distance",
        "uncertainty": "uncertainty",
        "volume": "volume |ln(V/median)|",
    }[name]
    shown = "empty mask" if math.isinf(score) else f"{score:.3f}"
    return f"{what} {shown} > {threshold:.3f} (calibrated on cross-validation)"


def flag_case(case: CaseFacts, reference: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the flag table: scores, thresholds, one boolean per flag, the reasons."""
    scores = _scores(case, reference)
    row: dict[str, Any] = {"subject": case.subject, "set": case.set, "site": case.site, "dice": case.dice}
    reasons: list[str] = []
    for name in SCORES:
        threshold = reference["calibration"][name]["threshold"]
        score = scores[name]
        flagged = threshold is not None and score is not None and score > threshold
        row[f"{name}_score"] = score
        row[f"{name}_threshold"] = threshold
        row[f"{name}_flag"] = bool(flagged)
        if flagged:
            reasons.append(_reason(name, float(score), float(threshold)))  # type: ignore[arg-type]
    grid = _grid_reasons(case, reference)
    row["grid_flag"] = bool(grid)
    reasons += grid
    row["any_flag"] = bool(reasons)
    row["reasons"] = "; ".join(reasons)
    return row


def flag_table(cases: Sequence[CaseFacts], reference: Mapping[str, Any]) -> pd.DataFrame:
    """Every subject's flags (:func:`flag_case`), sorted by set order of appearance and subject."""
    if not cases:
        raise DataError("no subjects to flag")
    rows = [flag_case(c, reference) for c in sorted(cases, key=lambda c: c.subject)]
    return pd.DataFrame(rows)


def _rate(hits: int, n: int) -> float:
    return hits / n if n else float("nan")


def flag_performance(table: pd.DataFrame, sets: Sequence[str], dice_fail: float) -> pd.DataFrame:
    """Per set and flag: subjects, flagged, and sensitivity / specificity for Dice < ``dice_fail``."""
    rows = []
    for set_name in sets:
        part = table[table["set"] == set_name]
        if part.empty:
            continue
        known = part[part["dice"].notna()]
        fail = known[known["dice"].astype(float) < dice_fail]
        good = known[known["dice"].astype(float) >= dice_fail]
        for flag in FLAGS:
            col = f"{flag}_flag"
            rows.append(
                {
                    "set": set_name,
                    "flag": flag,
                    "n": len(part),
                    "n_flagged": int(part[col].sum()),
                    "n_labelled": len(known),
                    "n_fail": len(fail),
                    "sensitivity": _rate(int(fail[col].sum()), len(fail)),
                    "specificity": _rate(int((~good[col].astype(bool)).sum()), len(good)),
                }
            )
    return pd.DataFrame(rows)


def write_review_records(table: pd.DataFrame, paths: Mapping[str, str | Path]) -> None:
    """One review record per subject (``paths``: subject -> JSON path); flagged when any flag fired."""
    by_subject = {str(r["subject"]): r for r in table.to_dict("records")}
    for subject, path in paths.items():
        if subject not in by_subject:
            raise DataError("subject has no row in the shift flag table", subject=subject, path=path)
        r = by_subject[subject]
        record = {
            "subject": subject,
            "stage": REVIEW_STAGE,
            "flag": bool(r["any_flag"]),
            "reason": r["reasons"],
            "score": rounded(_number(r["intensity_score"])),
            "threshold": rounded(_number(r["intensity_threshold"])),
            "flags": [f for f in FLAGS[:-1] if r[f"{f}_flag"]],
        }
        write_json(record, path)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
