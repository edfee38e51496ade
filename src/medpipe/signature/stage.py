"""The signature stage's two jobs: one outcome model per mask source, and the paired comparison of sources.

* :func:`signature_report` (rule ``signature``, one job per source): the subject x feature matrix of the
  source (every subject that has the outcome and a human label, so all sources are scored on the same
  subjects), the optional pre-selection to reproducible / robust features, repeated stratified CV
  (:func:`~medpipe.signature.model.cross_validate`), the model fitted on all of them
  (:func:`~medpipe.signature.model.fit_final`) and its record. Only subjects of the sheet's ``train`` set enter
  the CV and the final fit; labelled ``test`` and ``external`` subjects are scored once by the final model
  and reported per set (AUC with its DeLong CI), in the same table (column ``set``).
* :func:`comparison_report` (rule ``signature_compare``): DeLong's test for every configured pair of sources
  on their out-of-fold probabilities (and, per held-out set, on the final models' scores), in the reference
  study's form "AUC a (CI) vs b (CI), P = p", with ROC and calibration plots of the cross-validation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.core.config import sheet_sets
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import read_feature_table, read_tsv, write_tsv
from medpipe.core.sidecar import package_versions, sha256_file, write_json
from medpipe.signature.compare import compare_sources
from medpipe.signature.delong import auc_delong
from medpipe.signature.features import feature_keys, feature_matrix, preselect
from medpipe.signature.figures import plot_calibration, plot_roc
from medpipe.signature.model import FittedSignature, SignatureSettings, apply, cross_validate, fit_final
from medpipe.signature.outcomes import check_events, read_outcomes

logger = logging.getLogger(__name__)

#: Sheet sets in report order (cross-validation, internal test, external).
SET_ORDER = sheet_sets()
#: Columns of the out-of-fold table every ``signature`` job writes and ``signature_compare`` reads.
OOF_COLUMNS = ("subject", "set", "outcome", "probability", "probability_sd")


def preselection_keys(
    how: str, *, reproducibility: str | Path | None = None, robustness: str | Path | None = None
) -> set[str] | None:
    """Feature keys allowed by ``signature.preselect`` (``None`` = every feature).

    ``reproducible`` keeps the features the stats stage found reproducible between the human and the
    automatic masks (``reproducible`` column of ``reproducibility.tsv``); ``robust`` those robust to every
    perturbation (``robust`` column of ``robustness.tsv``); ``reproducible_and_robust`` both.
    """
    tables = {"reproducible": reproducibility, "robust": robustness}
    needs = {"all": [], "reproducible_and_robust": ["reproducible", "robust"]}.get(how, [how])
    keys: set[str] | None = None
    for column in needs:
        path = tables[column]
        if path is None:
            raise ConfigError(f"signature.preselect: {how!r} needs the {column} table of the stats stage")
        table = read_tsv(path)
        chosen = set(feature_keys(table)[table[column].astype(str).str.lower().eq("true")])
        keys = chosen if keys is None else keys & chosen
    if keys is not None and not keys:
        raise DataError(f"signature.preselect {how!r}: no feature passes", path=reproducibility or robustness)
    return keys


def _model_subjects(
    outcomes: pd.DataFrame, labelled: Sequence[str], n_folds: int, path: str | Path, held_out: Sequence[str] = ()
) -> list[str]:
    subjects = [s for s in outcomes.index if s in set(labelled)]
    left_out = sorted(set(outcomes.index) - set(subjects) - set(held_out))
    if left_out:
        logger.warning("outcome rows of %d subject(s) without a human label left out: %s", len(left_out), left_out)
    check_events(outcomes.loc[subjects, "outcome"].to_numpy(), n_folds=n_folds, path=path)
    return subjects


def signature_report(
    features_tsv: str | Path,
    outcomes_tsv: str | Path,
    out_oof: str | Path,
    out_selection: str | Path,
    out_model: str | Path,
    *,
    source: str,
    settings: Mapping[str, Any],
    labelled: Sequence[str],
    seed: int,
    reproducibility: str | Path | None = None,
    robustness: str | Path | None = None,
    sets: Mapping[str, str] | None = None,
) -> Path:
    """Cross-validated outcome model of one mask source; writes OOF table, selection table and model record.

    Parameters
    ----------
    settings
        The whole ``config["signature"]`` section (schema-validated).
    labelled
        Subjects with a human label: models of every source use the outcome subjects among them.
    sets
        Subject -> sheet ``set``: ``train`` subjects are modelled, ``test`` / ``external`` ones scored by the
        final model (every subject ``train`` when not given).
    """
    model_settings = SignatureSettings.from_mapping(settings["model"], seed=seed)
    outcomes = read_outcomes(outcomes_tsv, outcome=settings["outcome"], covariates=settings["covariates"])
    set_of = {s: (sets or {}).get(s, "train") for s in labelled}
    held = [s for s in outcomes.index if set_of.get(s, "train") != "train" and s in set_of]
    train = [s for s in labelled if set_of[s] == "train"]
    subjects = _model_subjects(outcomes, train, model_settings.n_folds, outcomes_tsv, held_out=held)
    keys = preselection_keys(settings["preselect"], reproducibility=reproducibility, robustness=robustness)
    table = read_feature_table(features_tsv)
    subjects = _with_features(table, source, subjects, "cross-validation")
    X = preselect(feature_matrix(table, source, subjects=subjects), keys)
    y = outcomes.loc[subjects, "outcome"]
    logger.info("source %s: %d subjects (%d events), %d candidate features", source, len(y), int(y.sum()), X.shape[1])
    cv = cross_validate(X, y, model_settings)
    final = fit_final(X, y, model_settings, threshold=cv.threshold)
    scored = _score_held_out(final, table, source, outcomes, {s: set_of[s] for s in held}, keys)
    write_tsv(pd.concat([cv.oof.assign(set="train"), scored])[list(OOF_COLUMNS)], out_oof)
    final_coef = final.coefficients.rename("final_coefficient")
    selection = cv.selection.merge(final_coef, left_on="feature", right_index=True, how="left")
    write_tsv(selection, out_selection)
    inputs = [p for p in (features_tsv, outcomes_tsv, reproducibility, robustness) if p]
    record = {
        "source": source,
        "n_subjects": len(y),
        "n_events": int(y.sum()),
        "n_candidate_features": int(X.shape[1]),
        "preselect": settings["preselect"],
        "cv": cv.summary(),
        "validation": _held_out_summary(scored),
        "final_model": final.as_dict(),
        "settings": {**settings["model"], "seed": seed},
        "inputs": {Path(p).name: sha256_file(p) for p in inputs},
        "packages": package_versions(["scikit-learn", "numpy", "scipy", "pandas"]),
    }
    logger.info("source %s: CV AUC %.3f (%.3f-%.3f)", source, cv.auc.auc, cv.auc.ci_low, cv.auc.ci_high)
    return write_json(record, out_model)


def _with_features(table: pd.DataFrame, source: str, subjects: Sequence[str], what: str) -> list[str]:
    """``subjects`` that have feature rows of ``source``; the others (an empty automatic mask: no features) are
    left out of ``what`` with a warning naming them."""
    have = set(table.loc[table["source"] == source, "subject"].astype(str))
    absent = [s for s in subjects if s not in have]
    if absent:
        logger.warning(
            "source %s: subject(s) %s have no features (empty mask?) and are left out of %s", source, absent, what
        )
    return [s for s in subjects if s in have]


def _score_held_out(
    final: FittedSignature,
    table: pd.DataFrame,
    source: str,
    outcomes: pd.DataFrame,
    sets: Mapping[str, str],
    keys: set[str] | None,
) -> pd.DataFrame:
    """The final model's probability for each held-out (test / external) subject, in the OOF table's columns.

    A subject without one of the model's features (an automatic mask without one of the regions, e.g. no core
    predicted on a shifted scan) cannot be scored: it is left out with a warning naming it and the feature."""
    present = _with_features(table, source, list(sets), "scoring by the final model") if sets else []
    if not present:
        return pd.DataFrame(columns=list(OOF_COLUMNS))
    X = preselect(feature_matrix(table, source, subjects=present, drop_incomplete=False), keys)
    X = X.reindex(columns=final.features)
    missing = X.isna().to_numpy()
    lacking = X.columns[missing.argmax(axis=1)]
    complete = ~missing.any(axis=1)
    for subject, feature in zip(X.index[~complete], lacking[~complete], strict=True):
        logger.warning(
            "source %s: subject %s has no value of the signature's feature %r (a region its mask lacks?) and is "
            "left out of scoring by the final model",
            source,
            subject,
            feature,
        )
    if not complete.any():
        return pd.DataFrame(columns=list(OOF_COLUMNS))
    scores = apply(final, X[complete]).set_index("subject")
    subjects = list(scores.index)
    return pd.DataFrame(
        {
            "subject": subjects,
            "set": [sets[s] for s in subjects],
            "outcome": outcomes.loc[subjects, "outcome"].to_numpy(),
            "probability": scores["probability"].to_numpy(),
            "probability_sd": float("nan"),
        }
    )


def _held_out_summary(scored: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per held-out set: n, events and the final model's AUC with its DeLong CI (null with one class only)."""
    out: dict[str, dict[str, Any]] = {}
    for name, group in scored.groupby("set", sort=True):
        y = group["outcome"].to_numpy(dtype=int)
        entry: dict[str, Any] = {"n_subjects": len(y), "n_events": int(y.sum()), "auc": None}
        if 0 < y.sum() < len(y):
            r = auc_delong(y, group["probability"].to_numpy())
            entry.update(auc=r.auc, ci_low=r.ci_low, ci_high=r.ci_high)
        out[str(name)] = entry
    return out


def _read_oof(path: str | Path) -> pd.DataFrame:
    table = read_tsv(path, dtype={"subject": str, "set": str})
    missing = set(OOF_COLUMNS) - set(table.columns)
    if missing:
        raise DataError(f"out-of-fold table lacks columns {sorted(missing)}", path=path)
    return table.set_index("subject")


def comparison_report(
    oof: Mapping[str, str | Path],
    out_table: str | Path,
    out_roc: str | Path,
    out_calibration: str | Path,
    *,
    pairs: Sequence[Sequence[str]],
    level: float,
    ci: str,
) -> Path:
    """DeLong comparison of every configured pair of sources; table, ROC and calibration figures."""
    tables = {source: _read_oof(path) for source, path in oof.items()}
    first = next(iter(tables.values()))
    rows = []
    for a, b in pairs:
        if a not in tables or b not in tables:
            raise ConfigError(f"signature.compare: pair {[a, b]} names a source without a signature {sorted(tables)}")
        for name in [s for s in SET_ORDER if s in set(first["set"])]:  # CV first, then test, external
            ta, tb = (tables[s][tables[s]["set"] == name] for s in (a, b))
            common = ta.index.intersection(tb.index)  # a subject one source could not score is left out of the pair
            if len(common) < max(len(ta), len(tb)):
                gone = sorted(set(ta.index).symmetric_difference(tb.index))
                logger.warning("%s vs %s (%s): subject(s) %s scored by one source only, left out", a, b, name, gone)
            ta, tb = ta.loc[common], tb.loc[common]
            y = ta["outcome"]
            if name != "train" and not 0 < y.sum() < len(y):
                logger.warning("%s vs %s: set %s has one outcome class only; not compared", a, b, name)
                continue
            cmp = compare_sources(ta["probability"], tb["probability"], y, sources=(a, b), level=level, ci=ci)
            logger.info("%s vs %s (%s): %s", a, b, name, cmp.text)
            rows.append({"set": name, **cmp.as_dict()})
    write_tsv(pd.DataFrame(rows), out_table)
    tables = {s: t[t["set"] == "train"] for s, t in tables.items()}
    common = sorted(set.intersection(*(set(t.index) for t in tables.values())))
    y = first.loc[common, "outcome"]
    probabilities = {s: t.loc[y.index, "probability"].to_numpy() for s, t in tables.items()}
    title = "; ".join(f"{r['source_a']} vs {r['source_b']}: {r['text']}" for r in rows)
    plot_roc(y.to_numpy(), probabilities, out_roc, title=title)
    plot_calibration(y.to_numpy(), probabilities, out_calibration)
    return Path(out_table)


def check_signature_config(
    settings: Mapping[str, Any], *, subjects: Sequence[str], labelled: Sequence[str], sources: Sequence[str]
) -> pd.DataFrame:
    """Start-of-run check of ``config["signature"]`` and its outcome table (before any job).

    Parameters
    ----------
    subjects
        Every subject of the sheet (an outcome row for another subject is an error).
    labelled
        Subjects with a human label (the models' subjects among the outcome rows).
    sources
        Mask sources the run's radiomics stage produces (radiomics sources and perturbations).

    Raises
    ------
    ConfigError
        A signature source the run does not produce, a compared pair outside ``signature.sources``, or a
        pre-selection whose statistics the run does not compute.
    DataError
        From :func:`~medpipe.signature.outcomes.read_outcomes`: unknown subjects, missing or non-binary values,
        one class only or fewer events than folds (among the labelled subjects).
    """
    wanted = list(settings["sources"])
    unknown = [s for s in wanted if s not in sources]
    if unknown:
        raise ConfigError(f"signature.sources: {unknown} are not mask sources of this run (it makes {list(sources)})")
    for pair in settings["compare"]:
        if any(s not in wanted for s in pair):
            raise ConfigError(f"signature.compare: pair {list(pair)} names a source outside signature.sources {wanted}")
    how = settings["preselect"]
    if how in ("reproducible", "reproducible_and_robust") and not {"human", "auto"} <= set(sources):
        raise ConfigError(f"signature.preselect: {how!r} needs radiomics.sources human and auto")
    if how in ("robust", "reproducible_and_robust") and not {"erode", "dilate", "shift", "noise"} & set(sources):
        raise ConfigError(f"signature.preselect: {how!r} needs radiomics.perturbations")
    n_folds = SignatureSettings.from_mapping(settings["model"]).n_folds
    path = settings["outcomes"]
    table = read_outcomes(path, outcome=settings["outcome"], subjects=subjects, covariates=settings["covariates"])
    _model_subjects(table, labelled, n_folds, path)
    return table
