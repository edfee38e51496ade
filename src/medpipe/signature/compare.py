"""Performance of predicted probabilities, and the paired comparison of two mask sources.

* :func:`youden_threshold`, :func:`sensitivity_specificity`, :func:`performance`: cut-off and
  operating point of probabilities (a call is ``probability >= threshold``).
* :func:`compare_sources`: DeLong's paired test of two signatures' out-of-fold probabilities on the
  same subjects (e.g. features from human masks vs automatic masks), formatted for a paper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import roc_curve

from medpipe.core.errors import DataError
from medpipe.signature.delong import DelongComparison, auc_delong, delong_test, format_comparison

logger = logging.getLogger(__name__)


def youden_threshold(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Probability cut-off maximising sensitivity + specificity - 1 (the highest such cut-off)."""
    fpr, tpr, thr = roc_curve(np.asarray(y).astype(int), np.asarray(p, dtype=float))
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # thr[0] is +inf
    return float(thr[best])


def sensitivity_specificity(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of the rule ``p >= threshold``."""
    yy = np.asarray(y).astype(int)
    call = np.asarray(p, dtype=float) >= threshold
    return float(call[yy == 1].mean()), float((~call[yy == 0]).mean())


def performance(
    y: npt.ArrayLike, probability: npt.ArrayLike, threshold: float, *, level: float = 0.95
) -> dict[str, Any]:
    """AUC (DeLong CI), sensitivity and specificity of probabilities on a test set at a given threshold."""
    res = auc_delong(y, probability, level=level)
    sens, spec = sensitivity_specificity(y, probability, threshold)
    return {**res.as_dict(), "threshold": threshold, "sensitivity": sens, "specificity": spec}


@dataclass(frozen=True)
class SourceComparison:
    """Paired comparison of two sources' OOF probabilities on the same subjects."""

    source_a: str
    source_b: str
    n_subjects: int
    comparison: DelongComparison
    text: str

    def as_dict(self) -> dict[str, Any]:
        """Flat record: sources, n, every DeLong field, and the formatted text."""
        return {"source_a": self.source_a, "source_b": self.source_b, "n_subjects": self.n_subjects,
                **self.comparison.as_dict(), "text": self.text}  # fmt: skip


def compare_sources(
    oof_a: pd.Series | npt.ArrayLike,
    oof_b: pd.Series | npt.ArrayLike,
    y: pd.Series | npt.ArrayLike,
    *,
    sources: tuple[str, str] = ("a", "b"),
    level: float = 0.95,
    ci: str = "delong",
) -> SourceComparison:
    """DeLong comparison of two signatures' OOF probabilities, e.g. human-mask vs auto-mask features.

    Series are aligned on their subject index and must cover the same subjects as ``y`` (the
    comparison is paired); arrays are taken in the same order. ``text`` reads
    ``"0.81 (0.64–0.99) vs 0.81 (0.60–1.00), P = .80"``.
    """
    if all(isinstance(v, pd.Series) for v in (oof_a, oof_b, y)):
        sa, sb, sy = (pd.Series(v) for v in (oof_a, oof_b, y))
        subjects = sorted(set(sy.index))
        for name, s in zip(sources, (sa, sb), strict=True):
            if set(s.index) != set(subjects):
                diff = sorted(set(s.index) ^ set(subjects))
                raise DataError(f"OOF predictions of source {name!r} and the outcome differ in subjects {diff[:10]}")
        a, b, yy = sa.loc[subjects].to_numpy(), sb.loc[subjects].to_numpy(), sy.loc[subjects].to_numpy()
    else:
        a, b, yy = np.asarray(oof_a), np.asarray(oof_b), np.asarray(y)
    cmp = delong_test(yy, a, b, level=level, ci=ci)
    return SourceComparison(sources[0], sources[1], int(np.asarray(yy).size), cmp, format_comparison(cmp))
