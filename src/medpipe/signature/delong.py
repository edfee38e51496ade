"""AUC with DeLong variance, and DeLong's test of two correlated AUCs (same subjects).

Method: the structural components of DeLong, DeLong & Clarke-Pearson (1988) computed with the
midrank algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389), O(N log N).
For ``m`` positives (outcome 1) and ``n`` negatives (outcome 0) and a score where *higher means
more likely positive* (no automatic direction flip: an AUC below 0.5 is reported as such):

* ``V10_i = (Tz_i - Tx_i) / n`` for positive ``i`` and ``V01_j = 1 - (Tz_j - Ty_j) / m`` for
  negative ``j``, where ``Tz`` are midranks among all subjects and ``Tx`` / ``Ty`` midranks within
  the positives / negatives. Ties count one half (the Mann–Whitney kernel).
* ``AUC = mean(V10)``; ``Var(AUC) = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample
  (co)variances (divisor ``N - 1``) of the components; for two scores the same formula gives the
  2 x 2 covariance matrix.
* Paired test: ``z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab)``, two-sided normal P.
  This is pROC's ``roc.test(roc_a, roc_b, method = "delong")`` (Robin et al. 2011); the tests check
  it against pROC's own published values on its ``aSAH`` data.

Confidence intervals of one AUC: ``"delong"`` (default) is the plain Wald interval
``AUC ± z_{1-α/2} SE`` clipped to [0, 1] — what pROC's ``ci.auc(method = "delong")`` reports.
``"logit"`` builds the Wald interval on ``logit(AUC)`` with ``SE / (AUC (1 - AUC))`` (delta method;
Pepe 2003, §5.2) and maps it back: it never leaves (0, 1) and covers better near AUC = 1 in small
samples; it is undefined at AUC of exactly 0 or 1, where it falls back to the plain interval.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from medpipe.core.errors import DataError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
CiMethod = Literal["delong", "logit"]
CI_METHODS: tuple[str, ...] = ("delong", "logit")


@dataclass(frozen=True)
class AucResult:
    """One AUC with its DeLong variance and confidence interval."""

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float
    ci_method: str
    level: float
    n_pos: int
    n_neg: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dictionary (for JSON / one table row)."""
        return asdict(self)


@dataclass(frozen=True)
class DelongComparison:
    """DeLong's paired test of two AUCs measured on the same subjects (``a - b``)."""

    a: AucResult
    b: AucResult
    covariance: float
    difference: float
    se_difference: float
    diff_ci_low: float
    diff_ci_high: float
    z: float
    p: float

    def as_dict(self) -> dict[str, Any]:
        """Flat dictionary: ``auc_a, ..., auc_b, ..., covariance, difference, z, p``."""
        out: dict[str, Any] = {}
        for side, res in (("a", self.a), ("b", self.b)):
            for key, value in res.as_dict().items():
                if key in ("n_pos", "n_neg", "level", "ci_method"):
                    out[key] = value
                else:
                    out[f"{key}_{side}"] = value
        for key in ("covariance", "difference", "se_difference", "diff_ci_low", "diff_ci_high", "z", "p"):
            out[key] = getattr(self, key)
        return out


def check_binary(y: npt.ArrayLike, *, what: str = "outcome") -> npt.NDArray[np.int_]:
    """Outcome as an int array of 0/1 with both classes present; :class:`DataError` otherwise."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(int)
    try:
        values = arr.astype(float)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} must be 0/1, got values {sorted(set(arr.tolist()))[:10]}") from err
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise DataError(
            f"{what} must be 0/1; positions {np.flatnonzero(bad)[:10].tolist()} hold {values[bad][:10].tolist()}"
        )
    out = values.astype(int)
    n_pos = int(out.sum())
    if n_pos == 0 or n_pos == out.size:
        raise DataError(f"{what} has one class only ({n_pos} positive, {out.size - n_pos} negative); an AUC needs both")
    return out


def _check_scores(scores: npt.ArrayLike, n: int, *, what: str) -> FloatArray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 1 or arr.size != n:
        raise DataError(f"{what} has shape {arr.shape}; expected {n} values, one per outcome")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"{what} has non-finite values at positions {np.flatnonzero(bad)[:10].tolist()}")
    return arr


def structural_components(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """DeLong's structural components of ``k`` scores (rows of ``scores``) by midranks (Sun & Xu 2014).

    Returns
    -------
    aucs
        Shape ``(k,)``.
    v10
        Shape ``(k, m)``: one component per positive subject.
    v01
        Shape ``(k, n)``: one component per negative subject.
    """
    yy = check_binary(y)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = yy == 1, yy == 0
    m, n = int(pos.sum()), int(neg.sum())
    tz = stats.rankdata(s, method="average", axis=1)
    tx = stats.rankdata(s[:, pos], method="average", axis=1)
    ty = stats.rankdata(s[:, neg], method="average", axis=1)
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, neg] - ty) / m
    return v10.mean(axis=1), v10, v01


def delong_covariance(y: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """AUCs and their DeLong covariance matrix for the rows of ``scores`` (``k x N``)."""
    aucs, v10, v01 = structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def auc_ci(auc: float, variance: float, *, level: float = 0.95, method: str = "delong") -> tuple[float, float]:
    """Confidence interval of an AUC from its variance (``"delong"`` plain-Wald clipped, or ``"logit"``)."""
    if method not in CI_METHODS:
        raise DataError(f"unknown AUC CI method {method!r}; expected one of {list(CI_METHODS)}")
    if not 0.0 < level < 1.0:
        raise DataError(f"confidence level must lie in (0, 1), got {level}")
    zc = float(stats.norm.ppf(0.5 + level / 2.0))
    se = math.sqrt(max(variance, 0.0))
    if method == "logit" and 0.0 < auc < 1.0:
        centre = math.log(auc / (1.0 - auc))
        half = zc * se / (auc * (1.0 - auc))
        return 1.0 / (1.0 + math.exp(-(centre - half))), 1.0 / (1.0 + math.exp(-(centre + half)))
    return max(0.0, auc - zc * se), min(1.0, auc + zc * se)


def _result(auc: float, var: float, m: int, n: int, level: float, ci: str) -> AucResult:
    lo, hi = auc_ci(auc, var, level=level, method=ci)
    return AucResult(float(auc), float(var), math.sqrt(max(var, 0.0)), lo, hi, ci, level, m, n)


def auc_delong(y: npt.ArrayLike, score: npt.ArrayLike, *, level: float = 0.95, ci: str = "delong") -> AucResult:
    """AUC of one score with its DeLong variance and ``level`` confidence interval.

    Parameters
    ----------
    y
        Binary outcome (0/1 or bool), both classes present.
    score
        One finite score per subject, higher meaning more likely positive.
    level, ci
        Confidence level and interval method (``"delong"`` or ``"logit"``, see the module docstring).

    Raises
    ------
    DataError
        One-class or non-binary outcome, length mismatch, non-finite scores.
    """
    yy = check_binary(y)
    s = _check_scores(score, yy.size, what="score")
    aucs, cov = delong_covariance(yy, s[None, :])
    return _result(float(aucs[0]), float(cov[0, 0]), int(yy.sum()), int(yy.size - yy.sum()), level, ci)


def delong_test(
    y: npt.ArrayLike,
    score_a: npt.ArrayLike,
    score_b: npt.ArrayLike,
    *,
    level: float = 0.95,
    ci: str = "delong",
) -> DelongComparison:
    """DeLong's test of two correlated AUCs (two scores on the same subjects), difference ``a - b``.

    Returns the two :class:`AucResult`, their covariance, the difference with its SE and Wald CI,
    ``z`` and the two-sided P. When the variance of the difference is zero (identical rankings)
    ``z = 0`` and ``P = 1`` if the AUCs are equal (as pROC).

    Raises
    ------
    DataError
        As :func:`auc_delong`, for either score; also when the difference has zero variance but the
        AUCs differ (no test is possible).
    """
    yy = check_binary(y)
    a = _check_scores(score_a, yy.size, what="score a")
    b = _check_scores(score_b, yy.size, what="score b")
    aucs, cov = delong_covariance(yy, np.vstack([a, b]))
    m, n = int(yy.sum()), int(yy.size - yy.sum())
    res_a = _result(float(aucs[0]), float(cov[0, 0]), m, n, level, ci)
    res_b = _result(float(aucs[1]), float(cov[1, 1]), m, n, level, ci)
    diff = float(aucs[0] - aucs[1])
    var_d = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var_d <= 1e-300:
        if abs(diff) > 1e-12:
            raise DataError(f"AUC difference {diff:.4g} has zero DeLong variance; the test is undefined")
        z, p, se = 0.0, 1.0, 0.0
    else:
        se = math.sqrt(var_d)
        z = diff / se
        p = float(2.0 * stats.norm.sf(abs(z)))
    zc = float(stats.norm.ppf(0.5 + level / 2.0))
    return DelongComparison(res_a, res_b, float(cov[0, 1]), diff, se, diff - zc * se, diff + zc * se, z, p)


def format_p(p: float) -> str:
    """P value in journal style: ``P = .80``, ``P = .03``, ``P = .004``, ``P < .001``."""
    if not math.isfinite(p):
        return "P = NA"
    if p < 0.001:
        return "P < .001"
    text = f"{p:.2f}" if p >= 0.01 else f"{p:.3f}"
    if text == "1.00":
        return "P > .99"
    return "P = " + text.lstrip("0")


def format_auc(res: AucResult, digits: int = 2) -> str:
    """``0.81 (0.64–0.99)``."""
    return f"{res.auc:.{digits}f} ({res.ci_low:.{digits}f}–{res.ci_high:.{digits}f})"


def format_comparison(cmp: DelongComparison, digits: int = 2) -> str:
    """``0.81 (0.64–0.99) vs 0.81 (0.60–1.00), P = .80``."""
    return f"{format_auc(cmp.a, digits)} vs {format_auc(cmp.b, digits)}, {format_p(cmp.p)}"
