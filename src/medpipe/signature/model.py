"""Radiomics signature of one mask source: penalised logistic regression in repeated stratified CV.

Per training fold (never on the held-out subjects): :class:`~medpipe.signature.features.CorrelationFilter`
(constant and redundant features), standardisation, then scikit-learn ``LogisticRegression`` with an
L1 (``liblinear``) or elastic-net (``saga``) penalty. ``C`` is fixed from the settings or chosen by an
inner stratified CV on the training fold (highest mean inner AUC; ties go to the smallest ``C``,
i.e. the sparsest model), in which the filter and scaler are refitted on each inner training part.
A pre-selection to a given key set (:func:`~medpipe.signature.features.preselect`) is applied before,
as it does not use the outcome.

Reported: out-of-fold (OOF) probabilities per subject averaged over the repeats; the AUC of those
with its DeLong CI; sensitivity and specificity at the threshold of the settings (``"youden"``: the
Youden-optimal cut-off on the OOF probabilities themselves, which is optimistic for sensitivity and
specificity, or a fixed probability); and each feature's selection frequency (non-zero coefficient)
over all outer fits. Optionally the 0.632+ bootstrap AUC (Efron & Tibshirani 1997), as used for
radiomics by Vallières et al. (2015): the whole procedure is refitted on each bootstrap sample and
scored on its out-of-bag subjects. Everything is seeded; the same inputs and seed give identical outputs.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError, DataError
from medpipe.signature.compare import sensitivity_specificity, youden_threshold
from medpipe.signature.delong import AucResult, auc_delong
from medpipe.signature.features import CorrelationFilter, univariate_auc
from medpipe.signature.outcomes import check_events

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
PENALTIES = ("l1", "elasticnet")


@dataclass(frozen=True)
class SignatureSettings:
    """Settings of one signature: ``config["signature"]["model"]`` plus the run's seed.

    Build it with :meth:`from_mapping`, which fills every default from the configuration schema
    (``signature.model`` in ``config/schemas/config.schema.yaml``, the one place they live).
    """

    n_folds: int
    n_repeats: int
    penalty: str
    l1_ratio: float
    C: float | None
    Cs: tuple[float, ...]
    inner_folds: int
    correlation_threshold: float
    correlation_method: str
    class_weight: str | None
    threshold: str | float
    max_iter: int
    level: float
    ci: str
    n_boot: int
    seed: int

    def __post_init__(self) -> None:
        if self.penalty not in PENALTIES:
            raise ConfigError(f"signature penalty {self.penalty!r} not in {list(PENALTIES)}")

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None, *, seed: int = 0) -> SignatureSettings:
        """Settings from the ``signature.model`` config section (validated, schema defaults filled in).

        Raises
        ------
        ConfigError
            Naming every unknown key or invalid value.
        """
        data = with_defaults(settings, "signature", "model")
        data["Cs"] = tuple(float(c) for c in data["Cs"])
        return cls(**data, seed=int(seed))


@dataclass
class CVResult:
    """Outputs of :func:`cross_validate`."""

    oof: pd.DataFrame
    auc: AucResult
    threshold: float
    sensitivity: float
    specificity: float
    selection: pd.DataFrame
    repeat_auc: list[float]
    chosen_c: list[float]
    bootstrap: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """One flat record (for the metrics JSON / TSV)."""
        out: dict[str, Any] = {f"auc_{k}" if k != "auc" else k: v for k, v in self.auc.as_dict().items()}
        out.update(threshold=self.threshold, sensitivity=self.sensitivity, specificity=self.specificity)
        out.update(repeat_auc_mean=float(np.mean(self.repeat_auc)), repeat_auc_sd=float(np.std(self.repeat_auc)))
        out.update({f"bootstrap_{k}": v for k, v in self.bootstrap.items()})
        return out


@dataclass
class FittedSignature:
    """A signature fitted on all training subjects (:func:`fit_final`)."""

    pipeline: Pipeline
    features: list[str]
    coefficients: pd.Series
    intercept: float
    C: float
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        """Readable record: kept features with standardised coefficients, intercept, C, threshold."""
        return {
            "features_in": len(self.features),
            "coefficients": {k: float(v) for k, v in self.coefficients.items()},
            "intercept": self.intercept,
            "C": self.C,
            "threshold": self.threshold,
        }


def _align(X: pd.DataFrame, y: pd.Series | npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.int_]]:
    if not isinstance(X, pd.DataFrame):
        raise DataError(f"the feature matrix must be a DataFrame indexed by subject, got {type(X).__name__}")
    if isinstance(y, pd.Series):
        missing = sorted(set(X.index) - set(y.index))
        extra = sorted(set(y.index) - set(X.index))
        if missing or extra:
            raise DataError(
                f"features and outcome differ in subjects: no outcome {missing[:10]}, no features {extra[:10]}"
            )
        yy = y.loc[X.index].to_numpy()
    else:
        yy = np.asarray(y)
        if yy.shape != (X.shape[0],):
            raise DataError(f"outcome has shape {yy.shape}; the feature matrix has {X.shape[0]} subjects")
    x = X.to_numpy(dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"feature {X.columns[col]!r} is not finite ({x[row, col]})", subject=str(X.index[row]))
    if X.shape[1] == 0:
        raise DataError("the feature matrix has no features")
    return x, yy.astype(int)


def _model(settings: SignatureSettings, C: float, seed: int) -> LogisticRegression:
    return LogisticRegression(
        C=C,
        l1_ratio=1.0 if settings.penalty == "l1" else settings.l1_ratio,
        solver="liblinear" if settings.penalty == "l1" else "saga",
        class_weight=settings.class_weight,
        max_iter=settings.max_iter,
        random_state=seed,
    )


def _prepare(settings: SignatureSettings, x: FloatArray, y: npt.NDArray[np.int_]) -> Pipeline:
    """Correlation filter and standardisation fitted on ``x``, ``y`` (independent of ``C``)."""
    filt = CorrelationFilter(settings.correlation_threshold, settings.correlation_method)
    return Pipeline([("filter", filt), ("scale", StandardScaler())]).fit(x, y)


def _fit_model(settings: SignatureSettings, C: float, seed: int, xt: FloatArray, y: npt.NDArray[np.int_]) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        lr = _model(settings, C, seed).fit(xt, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("logistic regression (C=%g) did not converge in %d iterations", C, settings.max_iter)
    return lr


def _fit(settings: SignatureSettings, C: float, seed: int, x: FloatArray, y: npt.NDArray[np.int_]) -> Pipeline:
    """The whole per-fold procedure: filter, scaler and penalised logistic regression fitted on ``x``, ``y``."""
    prep = _prepare(settings, x, y)
    lr = _fit_model(settings, C, seed, prep.transform(x), y)
    return Pipeline([*prep.steps, ("model", lr)])


def _auc(y: npt.NDArray[np.int_], p: FloatArray) -> float:
    return float(univariate_auc(p[:, None], y)[0])


def choose_c(x: FloatArray, y: npt.NDArray[np.int_], settings: SignatureSettings, seed: int) -> float:
    """``C`` of the settings, or the one with the best mean AUC in an inner stratified CV on ``x``, ``y``."""
    if settings.C is not None:
        return float(settings.C)
    n_inner = min(settings.inner_folds, int(y.sum()), int(y.size - y.sum()))
    if n_inner < 2:
        raise DataError(f"too few events ({int(y.sum())} of {y.size}) in a training fold for an inner CV")
    Cs = sorted(settings.Cs)
    scores = np.zeros(len(Cs))
    for train, val in StratifiedKFold(n_inner, shuffle=True, random_state=seed).split(x, y):
        prep = _prepare(settings, x[train], y[train])
        xt, xv = prep.transform(x[train]), prep.transform(x[val])
        for k, C in enumerate(Cs):
            lr = _fit_model(settings, C, seed, xt, y[train])
            scores[k] += _auc(y[val], lr.predict_proba(xv)[:, 1])
    return float(Cs[int(np.argmax(scores))])


def _selected(pipe: Pipeline, names: list[str]) -> dict[str, float]:
    support = pipe.named_steps["filter"].get_support()
    coef = pipe.named_steps["model"].coef_[0]
    kept = np.asarray(names, dtype=object)[support]
    return {str(k): float(c) for k, c in zip(kept, coef, strict=True) if c != 0.0}


def _selection_table(picks: list[dict[str, float]], names: list[str]) -> pd.DataFrame:
    n_fits = len(picks)
    rows = []
    for name in names:
        coefs = [p[name] for p in picks if name in p]
        rows.append(
            {
                "feature": name,
                "selection_frequency": len(coefs) / n_fits,
                "mean_coefficient": float(np.mean(coefs)) if coefs else 0.0,
                "n_fits": n_fits,
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values(["selection_frequency", "feature"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


def cross_validate(X: pd.DataFrame, y: pd.Series | npt.ArrayLike, settings: SignatureSettings) -> CVResult:
    """Repeated stratified CV of the whole signature procedure (all selection inside the folds).

    Parameters
    ----------
    X
        Subject x feature matrix (:func:`~medpipe.signature.features.feature_matrix`, after any pre-selection).
    y
        Binary outcome: a Series indexed by subject (aligned to ``X``) or an array in ``X``'s order.
    settings
        :class:`SignatureSettings`.

    Returns
    -------
    CVResult
        ``oof`` (``subject, outcome, probability, probability_sd``), the DeLong AUC of the mean OOF
        probabilities, threshold with sensitivity/specificity, the ``selection`` table
        (``feature, selection_frequency, mean_coefficient, n_fits``), per-repeat AUCs, the ``C`` of
        each outer fit, and the 0.632+ bootstrap when ``settings.n_boot > 0``.
    """
    x, yy = _align(X, y)
    check_events(yy, n_folds=settings.n_folds)
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: BLAS threads only cost time
        result = _cross_validate(x, yy, X, settings)
    if settings.n_boot > 0:
        result.bootstrap = bootstrap_632plus(X, yy, settings)
    auc = result.auc
    logger.info("signature CV AUC %.3f (%.3f-%.3f), %d fits", auc.auc, auc.ci_low, auc.ci_high, len(result.chosen_c))
    return result


def _cross_validate(x: FloatArray, yy: npt.NDArray[np.int_], X: pd.DataFrame, settings: SignatureSettings) -> CVResult:
    names = [str(c) for c in X.columns]
    probs = np.full((settings.n_repeats, yy.size), np.nan)
    picks: list[dict[str, float]] = []
    chosen: list[float] = []
    splitter = RepeatedStratifiedKFold(
        n_splits=settings.n_folds, n_repeats=settings.n_repeats, random_state=settings.seed
    )
    for k, (train, test) in enumerate(splitter.split(x, yy)):
        seed = settings.seed + 1 + k
        C = choose_c(x[train], yy[train], settings, seed)
        pipe = _fit(settings, C, seed, x[train], yy[train])
        probs[k // settings.n_folds, test] = pipe.predict_proba(x[test])[:, 1]
        picks.append(_selected(pipe, names))
        chosen.append(C)
    mean_p = probs.mean(axis=0)
    oof = pd.DataFrame(
        {"subject": X.index.astype(str), "outcome": yy, "probability": mean_p, "probability_sd": probs.std(axis=0)}
    )
    auc = auc_delong(yy, mean_p, level=settings.level, ci=settings.ci)
    threshold = youden_threshold(yy, mean_p) if settings.threshold == "youden" else float(settings.threshold)
    sens, spec = sensitivity_specificity(yy, mean_p, threshold)
    return CVResult(
        oof, auc, threshold, sens, spec, _selection_table(picks, names), [_auc(yy, p) for p in probs], chosen
    )


def fit_final(
    X: pd.DataFrame, y: pd.Series | npt.ArrayLike, settings: SignatureSettings, *, threshold: float | None = None
) -> FittedSignature:
    """Fit the signature once on all training subjects (``C`` chosen by inner CV unless fixed).

    ``threshold`` is the cut-off to carry to new data, normally :attr:`CVResult.threshold` of the
    same training set; by default the numeric threshold of the settings (0.5 when it is ``"youden"``,
    with a warning, as a Youden cut-off needs OOF predictions).
    """
    x, yy = _align(X, y)
    check_events(yy, n_folds=settings.inner_folds if settings.C is None else 1)
    if threshold is None:
        if settings.threshold == "youden":
            logger.warning("fit_final without a CV threshold: using 0.5 (pass CVResult.threshold)")
            threshold = 0.5
        else:
            threshold = float(settings.threshold)
    C = choose_c(x, yy, settings, settings.seed)
    pipe = _fit(settings, C, settings.seed, x, yy)
    names = [str(c) for c in X.columns]
    coefs = pd.Series(_selected(pipe, names), dtype=float).sort_index()
    return FittedSignature(pipe, names, coefs, float(pipe.named_steps["model"].intercept_[0]), C, float(threshold))


def apply(model: FittedSignature, X: pd.DataFrame) -> pd.DataFrame:
    """Score new subjects once: ``subject, probability, positive`` (``probability >= threshold``).

    ``X`` must hold every feature the model was fitted on (extra columns are ignored).
    """
    missing = [f for f in model.features if f not in X.columns]
    if missing:
        raise DataError(f"{len(missing)} feature(s) of the signature are missing in the data: {missing[:10]}")
    x = X[model.features].to_numpy(dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"feature {model.features[col]!r} is not finite", subject=str(X.index[row]))
    p = model.pipeline.predict_proba(x)[:, 1]
    return pd.DataFrame({"subject": X.index.astype(str), "probability": p, "positive": p >= model.threshold})


def _oob_auc(x: FloatArray, y: npt.NDArray[np.int_], settings: SignatureSettings, rng: np.random.Generator) -> float:
    idx = rng.integers(0, y.size, y.size)
    oob = np.setdiff1d(np.arange(y.size), idx)
    n_pos_in, n_pos_oob = int(y[idx].sum()), int(y[oob].sum())
    if min(n_pos_in, idx.size - n_pos_in) < settings.inner_folds or n_pos_oob in (0, oob.size):
        return math.nan
    seed = int(rng.integers(0, 2**31 - 1))
    pipe = _fit(settings, choose_c(x[idx], y[idx], settings, seed), seed, x[idx], y[idx])
    return _auc(y[oob], pipe.predict_proba(x[oob])[:, 1])


def bootstrap_632plus(X: pd.DataFrame, y: pd.Series | npt.ArrayLike, settings: SignatureSettings) -> dict[str, float]:
    """0.632+ bootstrap AUC (Efron & Tibshirani 1997) with ``settings.n_boot`` resamples.

    With errors ``e = 1 - AUC``: apparent ``e_app`` (fit and score on all subjects), out-of-bag
    ``e_oob`` (mean over resamples with both classes out of bag), no-information ``gamma = 0.5``;
    ``R = (e_oob' - e_app) / (gamma - e_app)`` with ``e_oob' = min(e_oob, gamma)``, clipped to [0, 1];
    ``w = 0.632 / (1 - 0.368 R)``; ``AUC_632+ = 1 - ((1 - w) e_app + w e_oob')``.
    """
    x, yy = _align(X, y)
    rng = np.random.default_rng(settings.seed)
    with threadpool_limits(limits=1, user_api="blas"):
        C = choose_c(x, yy, settings, settings.seed)
        app = _auc(yy, _fit(settings, C, settings.seed, x, yy).predict_proba(x)[:, 1])
        oob = np.array([_oob_auc(x, yy, settings, rng) for _ in range(settings.n_boot)])
    used = oob[np.isfinite(oob)]
    if used.size == 0:
        raise DataError(f"no usable bootstrap resample in {settings.n_boot} (too few events: {int(yy.sum())})")
    e_app, e_oob = 1.0 - app, min(1.0 - float(used.mean()), 0.5)
    r = (e_oob - e_app) / (0.5 - e_app) if e_oob > e_app and 0.5 > e_app else 0.0
    w = 0.632 / (1.0 - 0.368 * min(max(r, 0.0), 1.0))
    return {
        "auc_apparent": app,
        "auc_oob": float(used.mean()),
        "auc_632plus": 1.0 - ((1.0 - w) * e_app + w * e_oob),
        "n_boot_used": float(used.size),
    }
