"""Tests of medpipe.signature.delong.

(a) Published values: pROC's own test suite (xrobin/pROC, tests/testthat/test-roc.test.R and test-var.R;
    Robin et al. 2011, BMC Bioinformatics 12:77) on its ``aSAH`` data set (Turck et al. 2010, 113
    patients, 41 poor outcomes), embedded below: ``var(roc(outcome, wfns))`` etc. and
    ``roc.test(r.wfns, r.s100b)`` Z = 2.20898359144091, P = 0.0271757822291882, difference CI
    0.0104061769564846 to 0.174214419249478. The ndka DeLong CI is pROC's ``ci.auc`` (plain Wald).
(b) A brute-force O(m n) reference built from DeLong et al. (1988)'s definition of the structural
    components, and a large stratified paired bootstrap (pROC's bootstrap test) on correlated scores.
(c) AUC equals scikit-learn's ``roc_auc_score``, ties included; errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from medpipe.core.errors import DataError
from medpipe.signature.delong import (
    auc_ci,
    auc_delong,
    delong_test,
    format_comparison,
    format_p,
    structural_components,
)

# aSAH (pROC), in pROC's row order: outcome, wfns (1-5), s100b (µg/L), ndka (µg/L).
OUTCOME = (  # 1 = Poor (gos6 <= 3), 0 = Good
    0,
    0,
    0,
    0,
    1,
    1,
    0,
    1,
    0,
    0,
    1,
    0,
    1,
    1,
    0,
    0,
    1,
    0,
    1,
    1,
    1,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    0,
    0,
    1,
    1,
    0,
    1,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    1,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    1,
    0,
    1,
    0,
    0,
    1,
    1,
    1,
    0,
    1,
    1,
    0,
    1,
    1,
    1,
    1,
    0,
    0,
    0,
    1,
    1,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    1,
    1,
    1,
    1,
    1,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
)
WFNS = (
    1,
    1,
    1,
    1,
    3,
    2,
    5,
    4,
    1,
    2,
    5,
    2,
    5,
    5,
    1,
    2,
    5,
    2,
    2,
    5,
    2,
    1,
    1,
    1,
    1,
    2,
    1,
    2,
    1,
    1,
    3,
    4,
    2,
    1,
    4,
    5,
    4,
    1,
    4,
    2,
    5,
    5,
    1,
    1,
    2,
    4,
    1,
    1,
    2,
    5,
    5,
    2,
    1,
    2,
    5,
    1,
    2,
    2,
    2,
    1,
    5,
    1,
    1,
    2,
    5,
    2,
    1,
    4,
    5,
    2,
    4,
    4,
    1,
    4,
    1,
    2,
    1,
    4,
    2,
    1,
    2,
    3,
    2,
    4,
    2,
    1,
    4,
    5,
    1,
    1,
    5,
    4,
    2,
    2,
    1,
    1,
    1,
    3,
    1,
    2,
    5,
    2,
    2,
    5,
    5,
    5,
    2,
    4,
    4,
    5,
    1,
    1,
    1,
)
S100B = (
    0.13,
    0.14,
    0.1,
    0.04,
    0.13,
    0.1,
    0.47,
    0.16,
    0.18,
    0.1,
    0.12,
    0.1,
    0.44,
    0.71,
    0.04,
    0.08,
    0.49,
    0.04,
    0.07,
    0.33,
    0.09,
    0.09,
    0.07,
    0.11,
    0.07,
    0.17,
    0.07,
    0.11,
    0.13,
    0.19,
    0.05,
    0.16,
    0.41,
    0.14,
    0.34,
    0.35,
    0.48,
    0.09,
    0.96,
    0.25,
    0.5,
    0.46,
    0.16,
    0.07,
    0.43,
    0.45,
    0.11,
    0.08,
    0.09,
    0.86,
    0.52,
    0.08,
    0.06,
    0.13,
    2.07,
    0.1,
    0.14,
    0.15,
    0.07,
    0.06,
    0.77,
    0.05,
    0.09,
    0.3,
    0.03,
    0.09,
    0.04,
    0.23,
    0.7,
    0.09,
    0.27,
    0.71,
    0.08,
    0.26,
    0.08,
    0.16,
    0.09,
    0.13,
    0.1,
    0.08,
    0.11,
    0.33,
    0.11,
    0.28,
    0.07,
    0.1,
    0.32,
    0.22,
    0.07,
    0.05,
    0.24,
    0.38,
    0.1,
    0.15,
    0.08,
    0.14,
    0.1,
    0.07,
    0.04,
    0.19,
    0.56,
    0.14,
    0.58,
    0.32,
    0.82,
    0.74,
    0.15,
    0.47,
    0.17,
    0.44,
    0.15,
    0.5,
    0.48,
)
NDKA = (
    3.01,
    8.54,
    8.09,
    10.42,
    17.4,
    12.75,
    6.0,
    13.2,
    15.54,
    6.01,
    15.96,
    17.86,
    5.18,
    8.9,
    13.41,
    20.75,
    11.6,
    16.11,
    32.37,
    54.82,
    32.41,
    49.94,
    40.34,
    9.47,
    6.29,
    12.53,
    6.54,
    6.3,
    80.3,
    12.8,
    9.8,
    9.81,
    9.85,
    18.21,
    5.03,
    14.04,
    21.93,
    8.02,
    7.42,
    8.38,
    6.59,
    9.63,
    13.12,
    7.96,
    14.34,
    41.43,
    7.63,
    7.06,
    12.59,
    13.56,
    3.87,
    9.44,
    7.66,
    12.98,
    419.19,
    27.19,
    22.27,
    9.95,
    21.22,
    11.73,
    10.4,
    58.83,
    6.39,
    11.09,
    12.22,
    13.67,
    17.21,
    22.63,
    12.9,
    9.7,
    21.57,
    8.23,
    72.57,
    15.54,
    10.51,
    10.6,
    14.57,
    5.19,
    9.63,
    4.61,
    21.48,
    17.3,
    12.71,
    9.44,
    11.07,
    19.46,
    10.83,
    5.37,
    11.97,
    7.75,
    9.83,
    10.55,
    28.49,
    8.53,
    12.57,
    12.9,
    46.83,
    11.68,
    12.67,
    9.01,
    9.57,
    34.06,
    11.72,
    14.26,
    47.61,
    11.67,
    24.58,
    10.33,
    13.87,
    15.89,
    22.43,
    6.79,
    13.45,
)


def _asah() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    y = np.asarray(OUTCOME, dtype=int)
    return y, {"wfns": np.asarray(WFNS, float), "s100b": np.asarray(S100B, float), "ndka": np.asarray(NDKA, float)}


def test_asah_shape() -> None:
    y, markers = _asah()
    assert y.size == 113 and int(y.sum()) == 41
    assert all(v.size == 113 for v in markers.values())


@pytest.mark.parametrize(
    ("name", "auc", "var"),
    [
        ("wfns", 0.823678861788618, 0.00146991470882363),
        ("ndka", 0.611957994579946, 0.0031908105493913),
        ("s100b", 0.731368563685637, 0.00266868245717244),
    ],
)
def test_proc_auc_and_variance(name: str, auc: float, var: float) -> None:
    y, markers = _asah()
    res = auc_delong(y, markers[name])
    assert res.auc == pytest.approx(auc, abs=1e-10)
    assert res.variance == pytest.approx(var, abs=1e-10)
    assert res.variance == pytest.approx(var, rel=1e-8)
    assert (res.n_pos, res.n_neg) == (41, 72)


def test_proc_ci_ndka() -> None:
    y, markers = _asah()
    res = auc_delong(y, markers["ndka"])
    assert (res.ci_low, res.ci_high) == pytest.approx((0.501244999271703, 0.722670989888189), abs=1e-10)
    logit = auc_delong(y, markers["ndka"], ci="logit")
    # logit(0.612) +- 1.96 * SE / (AUC (1 - AUC)), mapped back: both limits move towards 0.5
    assert (logit.ci_low, logit.ci_high) == pytest.approx((0.497330565621, 0.715404233940), abs=1e-9)
    assert logit.ci_high - res.auc < res.auc - logit.ci_low


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "lo", "hi"),
    [
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)
def test_proc_roc_test(a: str, b: str, z: float, p: float, lo: float, hi: float) -> None:
    y, markers = _asah()
    cmp = delong_test(y, markers[a], markers[b])
    assert cmp.z == pytest.approx(z, abs=1e-8)
    assert cmp.p == pytest.approx(p, abs=1e-8)
    assert (cmp.diff_ci_low, cmp.diff_ci_high) == pytest.approx((lo, hi), abs=1e-8)
    rev = delong_test(y, markers[b], markers[a])
    assert rev.z == pytest.approx(-z, abs=1e-8) and rev.p == pytest.approx(p, abs=1e-8)


def test_identical_scores_give_p_one() -> None:
    y, markers = _asah()
    cmp = delong_test(y, markers["wfns"], markers["wfns"])
    assert cmp.z == 0.0 and cmp.p == 1.0


def _brute_force(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong (1988) structural components by explicit pairs: psi = 1, 1/2, 0 for >, =, <."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    cov = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    return v10.mean(axis=1), cov


def test_matches_structural_components_definition_with_ties() -> None:
    rng = np.random.default_rng(5)
    y = rng.permutation(np.r_[np.ones(23, int), np.zeros(31, int)])
    a = np.round(y + rng.normal(size=y.size), 1)  # rounding makes many ties
    b = np.round(0.5 * a + rng.normal(size=y.size), 0)
    aucs, cov = _brute_force(y, np.vstack([a, b]))
    cmp = delong_test(y, a, b)
    assert (cmp.a.auc, cmp.b.auc) == pytest.approx(tuple(aucs), abs=1e-12)
    assert (cmp.a.variance, cmp.b.variance, cmp.covariance) == pytest.approx(
        (cov[0, 0], cov[1, 1], cov[0, 1]), abs=1e-12
    )
    z = (aucs[0] - aucs[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert cmp.z == pytest.approx(z, abs=1e-10)
    _, v10, v01 = structural_components(y, np.vstack([a, b]))
    assert v10.shape == (2, 23) and v01.shape == (2, 31)


def test_tiny_hand_example() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs 1, 1, 0.5, 1 -> AUC 0.875
    # V10 = (1, 0.75), V01 = (0.75, 1); Var = 0.03125/2 + 0.03125/2 = 0.03125
    res = auc_delong([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])
    assert res.auc == pytest.approx(0.875)
    assert res.variance == pytest.approx(0.03125)


def _bootstrap_p(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> float:
    """pROC's paired bootstrap test: D = diff / sd(bootstrap diffs), stratified resampling."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.hstack([rng.choice(pos, (n_boot, pos.size)), rng.choice(neg, (n_boot, neg.size))])
    m, n = pos.size, neg.size

    def aucs(s: np.ndarray) -> np.ndarray:
        ranks = stats.rankdata(s[idx], axis=1)
        return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)

    diffs = aucs(a) - aucs(b)
    d = (roc_auc_score(y, a) - roc_auc_score(y, b)) / diffs.std(ddof=1)
    return float(2 * stats.norm.sf(abs(d)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_p_agrees_with_paired_bootstrap(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 200
    y = (rng.random(n) < 0.4).astype(int)
    common = rng.normal(size=n)
    a = 0.9 * y + common + 0.7 * rng.normal(size=n)
    b = 0.7 * y + common + 0.7 * rng.normal(size=n)
    p_delong = delong_test(y, a, b).p
    p_boot = _bootstrap_p(y, a, b, n_boot=4000, seed=seed)
    assert abs(p_delong - p_boot) < 0.02, (p_delong, p_boot)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = (0, 1)
    s = rng.integers(0, 5, 60).astype(float)  # heavy ties
    assert auc_delong(y, s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc_delong(y.astype(bool), s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_ci_clipped_and_logit_inside_unit_interval() -> None:
    lo, hi = auc_ci(0.97, 0.03**2)
    assert hi == 1.0 and lo == pytest.approx(0.97 - 1.959963984540054 * 0.03)
    lo, hi = auc_ci(0.97, 0.03**2, method="logit")
    assert 0.0 < lo < 0.97 < hi < 1.0
    assert auc_ci(1.0, 0.0, method="logit") == (1.0, 1.0)


def test_errors() -> None:
    with pytest.raises(DataError, match="one class only"):
        auc_delong([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="expected 4 values"):
        auc_delong([0, 1, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="expected 3 values"):
        delong_test([0, 1, 0], [0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(DataError, match="must be 0/1"):
        auc_delong([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="non-finite"):
        auc_delong([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(DataError, match="unknown AUC CI method"):
        auc_delong([0, 1, 1], [0.1, 0.2, 0.3], ci="wald")


def test_formatting() -> None:
    y, markers = _asah()
    text = format_comparison(delong_test(y, markers["wfns"], markers["s100b"]))
    assert text == "0.82 (0.75–0.90) vs 0.73 (0.63–0.83), P = .03"
    assert format_p(0.8) == "P = .80" and format_p(0.0004) == "P < .001" and format_p(0.0042) == "P = .004"
