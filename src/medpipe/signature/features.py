"""Feature matrices for the signature and the selection steps fitted inside each training fold.

* :func:`feature_matrix`: the long radiomics table (``subject, source, image_type, feature_class,
  feature, kind, value, ...``, written by the radiomics stage) to a subject x feature matrix of one
  mask source. The feature key (:func:`feature_keys`) is the ``feature`` column (e.g.
  ``original_firstorder_Mean``, which already holds the image type) when the table holds one image, else
  ``<image>:<feature>`` (e.g. ``ADC:original_firstorder_Mean``). Only ``kind == "pyradiomics"`` rows are used.
* :func:`preselect`: keep only a given set of keys (reproducible features: CCC >= cutoff between
  human and automatic masks, robust ones, ...), computed elsewhere without the outcome.
* :class:`CorrelationFilter`: a scikit-learn transformer fitted on the training fold only. It drops
  constant features, ranks the others by univariate discrimination ``|AUC - 0.5|`` on the training
  fold (ties: the first key in column order), and walks down that ranking keeping a feature only if
  its absolute correlation (Spearman by default, or Pearson) with every feature already kept is
  <= the threshold. So of a
  correlated pair, the one with the higher univariate AUC is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin

from medpipe.core.errors import DataError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

CORRELATION_METHODS = ("spearman", "pearson")


def feature_keys(table: pd.DataFrame) -> pd.Series:
    """The signature's feature key of every row of a table with ``feature`` (and ``image``, ``region``) columns.

    ``feature`` when the table holds a single image and a single region (or lacks those columns), else prefixed
    by what varies: ``<image>:<feature>``, ``<region>:<feature>`` or ``<image>:<region>:<feature>`` (a
    peritumoral ring's features are other features than the structure's): the same key for the radiomics table
    and the stats tables that preselect from it.
    """
    key = table["feature"].astype(str)
    for column in ("region", "image"):
        if column in table.columns and table[column].nunique() > 1:
            key = table[column].astype(str) + ":" + key
    return key


def feature_matrix(
    features: pd.DataFrame, source: str, *, subjects: Sequence[str] | None = None, drop_incomplete: bool = True
) -> pd.DataFrame:
    """Subject x feature matrix of one mask source (pyradiomics rows only).

    Features with a non-finite value for any of the subjects are dropped (logged) unless ``drop_incomplete`` is
    false (then they stay, NaN where a subject has none: a region its mask does not have); subjects listed in
    ``subjects`` without features for this source are an error.

    Returns
    -------
    pandas.DataFrame
        Index ``subject`` (sorted, or in the order of ``subjects``), one float column per feature key
        (sorted).
    """
    needed = {"subject", "source", "feature", "value"}
    missing = needed - set(features.columns)
    if missing:
        raise DataError(f"feature table lacks columns {sorted(missing)}")
    rows = features[features["source"] == source]
    if "kind" in rows.columns:
        rows = rows[rows["kind"] == "pyradiomics"]
    if rows.empty:
        raise DataError(
            f"no feature rows for mask source {source!r} (sources present: {sorted(features['source'].unique())})"
        )
    rows = rows.assign(key=feature_keys(rows))
    dup = rows.duplicated(["subject", "key"])
    if dup.any():
        first = rows.loc[dup, ["subject", "key"]].iloc[0]
        raise DataError(f"feature {first['key']!r} appears twice for source {source!r}", subject=first["subject"])
    wide = rows.pivot(index="subject", columns="key", values="value").astype(float)
    wide.index = wide.index.astype(str)
    if subjects is not None:
        order = [str(s) for s in subjects]
        absent = [s for s in order if s not in wide.index]
        if absent:
            raise DataError(f"subjects without features for mask source {source!r}: {absent[:10]}")
        wide = wide.loc[order]
    else:
        wide = wide.sort_index()
    finite = np.isfinite(wide.to_numpy()).all(axis=0) if drop_incomplete else np.ones(wide.shape[1], dtype=bool)
    if not finite.all():
        logger.warning(
            "source %s: %d feature(s) with missing values dropped, e.g. %s",
            source,
            int((~finite).sum()),
            list(wide.columns[~finite][:5]),
        )
    wide = wide.loc[:, finite]
    wide = wide.reindex(sorted(wide.columns), axis=1)
    wide.columns.name = None
    wide.index.name = "subject"
    return wide


def preselect(matrix: pd.DataFrame, keys: Collection[str] | None) -> pd.DataFrame:
    """Columns of ``matrix`` whose key is in ``keys`` (all columns when ``keys`` is None).

    Raises :class:`DataError` when none of the keys is present.
    """
    if keys is None:
        return matrix
    kept = [c for c in matrix.columns if c in set(keys)]
    if not kept:
        raise DataError(
            f"none of the {len(keys)} pre-selected feature keys is in the feature matrix "
            f"(e.g. {sorted(keys)[:3]} vs {list(matrix.columns[:3])})"
        )
    logger.info("pre-selection keeps %d of %d features", len(kept), matrix.shape[1])
    return matrix[kept]


def univariate_auc(X: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """AUC (Mann–Whitney, ties one half) of every column of ``X`` for outcome ``y``."""
    x = np.asarray(X, dtype=float)
    yy = np.asarray(y).astype(int)
    m = int(yy.sum())
    n = yy.size - m
    ranks = stats.rankdata(x, axis=0)
    return np.asarray((ranks[yy == 1].sum(axis=0) - m * (m + 1) / 2.0) / (m * n), dtype=float)


def _abs_correlation(x: FloatArray, method: str) -> FloatArray:
    data = stats.rankdata(x, axis=0) if method == "spearman" else x
    centred = data - data.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    unit = centred / norm
    return np.abs(unit.T @ unit)


class CorrelationFilter(TransformerMixin, BaseEstimator):
    """Drop constant and highly correlated features, keeping the more discriminative of each pair.

    Parameters
    ----------
    threshold
        Two features are redundant when ``|r| > threshold``; ``threshold >= 1`` only drops
        constant features.
    method
        ``"spearman"`` (default; radiomics features are skewed) or ``"pearson"``.

    Attributes
    ----------
    support_
        Boolean mask of the kept input columns.
    priority_
        Training-fold ``|AUC - 0.5|`` of every input column.
    """

    def __init__(self, threshold: float = 0.9, method: str = "spearman") -> None:
        self.threshold = threshold
        self.method = method

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> CorrelationFilter:
        """Choose the kept columns from the training data ``X``, ``y``."""
        if self.method not in CORRELATION_METHODS:
            raise DataError(f"unknown correlation method {self.method!r}; expected one of {CORRELATION_METHODS}")
        x = np.asarray(X, dtype=float)
        varying = np.ptp(x, axis=0) > 0
        self.priority_ = np.abs(univariate_auc(x, y) - 0.5)
        support = np.zeros(x.shape[1], dtype=bool)
        candidates = np.flatnonzero(varying)
        if candidates.size:
            order = candidates[np.argsort(-self.priority_[candidates], kind="stable")]
            corr = _abs_correlation(x[:, order], self.method)
            redundant = np.zeros(order.size, dtype=bool)
            kept: list[int] = []
            for pos in range(order.size):
                if redundant[pos]:
                    continue
                kept.append(pos)
                if self.threshold < 1.0:
                    redundant |= corr[pos] > self.threshold
            support[order[kept]] = True
        self.support_ = support
        self.n_features_in_ = x.shape[1]
        return self

    def transform(self, X: npt.ArrayLike) -> FloatArray:
        """Kept columns of ``X``."""
        x = np.asarray(X, dtype=float)
        return x[:, self.support_]

    def get_support(self) -> npt.NDArray[np.bool_]:
        """Mask of the kept columns."""
        return np.asarray(self.support_)

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        """Names of the kept columns (``x0, x1, ...`` when ``input_features`` is None)."""
        names = (
            np.asarray(input_features, dtype=object)
            if input_features is not None
            else np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        )
        return names[self.support_]
