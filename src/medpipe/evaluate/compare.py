"""Paired comparison of two sets of segmentation metrics (two models, or a model vs a second human).

Rows of the two metric tables (written by :func:`medpipe.evaluate.metrics.summarise` or
:func:`medpipe.evaluate.metrics.evaluate_pair`) are paired on ``subject`` and ``label``. For each class and
metric, the pairs where both values are finite are compared with the Wilcoxon signed-rank test
(two-sided, zero differences dropped as in Wilcoxon's original method, exact p-value for small
samples without ties) and the paired t-test (scipy). Defined edge cases: when every difference is
zero both tests report statistic 0 and p = 1; with fewer than two pairs the tests are not computed
(NaN) and ``note`` says why; when every difference is the same non-zero value (zero variance)
the t statistic is +-inf with p = 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.core.errors import DataError
from medpipe.evaluate.metrics import read_metrics, write_metrics

logger = logging.getLogger(__name__)

#: Metrics compared by default.
DEFAULT_METRICS = ("dice", "jaccard", "hausdorff_mm", "hd95_mm", "msd_mm", "rel_volume_diff")
_KEYS = ["subject", "label"]


def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank and paired t-test of ``b - a`` over finite pairs.

    Returns
    -------
    dict
        ``n``, ``mean_a``, ``mean_b``, ``mean_diff``, ``sd_diff``, ``median_diff`` (differences
        are ``b - a``), ``wilcoxon_stat``, ``wilcoxon_p``, ``ttest_stat``, ``ttest_p``, ``note``.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise DataError(f"paired samples differ in length: {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = y - x
    out: dict[str, Any] = {
        "n": int(d.size),
        "mean_a": float(x.mean()) if d.size else math.nan,
        "mean_b": float(y.mean()) if d.size else math.nan,
        "mean_diff": float(d.mean()) if d.size else math.nan,
        "sd_diff": float(d.std(ddof=1)) if d.size > 1 else math.nan,
        "median_diff": float(np.median(d)) if d.size else math.nan,
        "wilcoxon_stat": math.nan,
        "wilcoxon_p": math.nan,
        "ttest_stat": math.nan,
        "ttest_p": math.nan,
        "note": "",
    }
    if d.size < 2:
        out["note"] = f"{d.size} finite pair(s): tests need at least 2"
    elif np.all(d == 0):
        out.update(wilcoxon_stat=0.0, wilcoxon_p=1.0, ttest_stat=0.0, ttest_p=1.0, note="all differences are 0")
    else:
        w = stats.wilcoxon(y, x, zero_method="wilcox", alternative="two-sided")
        out.update(wilcoxon_stat=float(w.statistic), wilcoxon_p=float(w.pvalue))
        if np.ptp(d) <= 1e-12 * max(1.0, abs(float(d.mean()))):  # t undefined (zero variance)
            out.update(
                ttest_stat=math.copysign(math.inf, float(d.mean())), ttest_p=0.0, note="constant non-zero difference"
            )
        else:
            t = stats.ttest_rel(y, x)
            out.update(ttest_stat=float(t.statistic), ttest_p=float(t.pvalue))
    return out


def compare_results(
    table_a: str | Path,
    table_b: str | Path,
    out_tsv: str | Path,
    *,
    name_a: str = "a",
    name_b: str = "b",
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> pd.DataFrame:
    """Compare two metric tables subject by subject and write one row per class and metric.

    Parameters
    ----------
    table_a, table_b
        Metric TSVs with ``subject``, ``label`` and the metric columns.
    out_tsv
        Destination: ``label``, ``metric``, ``name_a``, ``name_b`` and the fields of
        :func:`paired_tests` (differences are ``b - a``).
    name_a, name_b
        Names of the two result sets, written to the table.
    metrics
        Metric columns to compare.
    """
    a = read_metrics(table_a)
    b = read_metrics(table_b)
    for path, table in ((table_a, a), (table_b, b)):
        missing = [c for c in [*_KEYS, *metrics] if c not in table.columns]
        if missing:
            raise DataError(f"metric table lacks columns {missing}", path=path)
    merged = a[[*_KEYS, *metrics]].merge(
        b[[*_KEYS, *metrics]], on=_KEYS, suffixes=("_a", "_b"), how="outer", indicator=True
    )
    unpaired = merged[merged["_merge"] != "both"]
    if len(unpaired):
        logger.warning(
            "%d subject/label rows are in only one table and are left out: %s",
            len(unpaired),
            ", ".join(f"{r.subject}/{r.label}" for r in unpaired.itertuples()),
        )
    paired = merged[merged["_merge"] == "both"]
    if paired.empty:
        raise DataError(f"no subject/label pairs in common with {Path(table_b).name}", path=table_a)
    rows = []
    for label, group in paired.groupby("label", sort=True):
        for metric in metrics:
            res = paired_tests(group[f"{metric}_a"].to_numpy(float), group[f"{metric}_b"].to_numpy(float))
            rows.append({"label": label, "metric": metric, "name_a": name_a, "name_b": name_b, **res})
            logger.info(
                "%s %s: %s %.4g vs %s %.4g (n=%d), Wilcoxon p=%.4g, paired t p=%.4g",
                label,
                metric,
                name_a,
                res["mean_a"],
                name_b,
                res["mean_b"],
                res["n"],
                res["wilcoxon_p"],
                res["ttest_p"],
            )
    result = pd.DataFrame(rows)
    write_metrics(result, out_tsv)
    return result
