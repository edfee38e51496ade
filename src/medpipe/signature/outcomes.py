"""The outcome table of the ``signature`` stage: one row per subject, a binary outcome, optional covariates.

Format: a TSV with a subject column (default ``subject``), the outcome column named in the
configuration, and any covariate columns. Subject IDs are read as text. The outcome must be
``0``/``1`` (``true``/``false`` is accepted), or two labels of which ``positive`` names the event.
Every refusal names the file, the offending subjects (or rows) and their values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from medpipe.core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def _listing(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _binary(values: pd.Series, positive: str | None, path: str | Path) -> pd.Series:
    """0/1 integers from text values; :class:`DataError` naming the subjects with other values."""
    text = values.str.strip()
    if positive is not None:
        labels = sorted(text.unique())
        if positive not in labels or len(labels) != 2:
            raise DataError(
                f"outcome {values.name!r} must hold two labels including positive={positive!r}; found {labels}",
                path=path,
            )
        return (text == positive).astype(int)
    low = text.str.lower()
    bad = ~low.isin(_TRUE | _FALSE)
    if bad.any():
        pairs = [f"{s}={v!r}" for s, v in text[bad].items()]
        raise DataError(
            f"outcome {values.name!r} is not binary (0/1) for subjects {_listing(pairs)}; "
            "recode it or name the event label with `positive`",
            path=path,
        )
    return low.isin(_TRUE).astype(int)


def _check_subjects(table: pd.DataFrame, subjects: Sequence[str] | None, path: str | Path) -> None:
    dup = sorted(table.index[table.index.duplicated()].unique())
    if dup:
        raise DataError(f"subjects listed more than once: {_listing(dup)}", path=path)
    if subjects is None:
        return
    known = {str(s) for s in subjects}
    unknown = sorted(set(table.index) - known)
    if unknown:
        raise DataError(
            f"subjects not in the subject sheet: {_listing(unknown)}; fix the IDs or add them to the sheet",
            path=path,
        )
    absent = sorted(known - set(table.index))
    if absent:
        logger.warning("%s: no outcome for %d subject(s), left out: %s", path, len(absent), _listing(absent))


def read_outcomes(
    path: str | Path,
    *,
    outcome: str,
    subjects: Sequence[str] | None = None,
    covariates: Sequence[str] = (),
    subject_column: str = "subject",
    positive: str | None = None,
    n_folds: int = 1,
) -> pd.DataFrame:
    """Read and validate an outcome table.

    Parameters
    ----------
    path
        Outcome TSV.
    outcome
        Name of the binary outcome column (from the configuration).
    subjects
        Known subject IDs (the subject sheet); a row for any other subject is an error. Known subjects
        without a row are left out with a warning.
    covariates
        Covariate columns to keep (must exist and be complete).
    subject_column
        Name of the subject ID column.
    positive
        Label of the event when the outcome is stored as two text labels (e.g. ``"Poor"``).
    n_folds
        Stratified folds the outcome must fill (:func:`check_events`); 1 checks both classes only.

    Returns
    -------
    pandas.DataFrame
        Indexed by subject (text, sorted), column ``outcome`` (int 0/1) then the covariates.

    Raises
    ------
    ConfigError
        The outcome, subject or a covariate column is not in the file.
    DataError
        Unreadable file; duplicate or unknown subjects; missing outcome or covariate values;
        non-binary outcome; a single outcome class or fewer events than ``n_folds``.
    """
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot read the outcome table: {err}", path=path) from err
    wanted = [subject_column, outcome, *covariates]
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise ConfigError(f"columns {missing} not in the outcome table (columns: {list(raw.columns)})", path=path)
    table = raw[wanted].copy()
    table[subject_column] = table[subject_column].str.strip()
    no_id = np.flatnonzero(table[subject_column].eq("").to_numpy())
    if no_id.size:
        raise DataError(f"rows {(no_id + 2).tolist()[:10]} have no subject ID (line numbers)", path=path)
    table = table.set_index(subject_column)
    table.index.name = "subject"
    _check_subjects(table, subjects, path)
    for column in (outcome, *covariates):
        empty = table.index[table[column].str.strip().isin(["", "NA", "NaN", "nan"])].tolist()
        if empty:
            raise DataError(f"column {column!r} has no value for subjects {_listing(sorted(empty))}", path=path)
    out = pd.DataFrame({"outcome": _binary(table[outcome].rename(outcome), positive, path)}, index=table.index)
    for column in covariates:
        converted = pd.to_numeric(table[column], errors="coerce")
        out[column] = converted if converted.notna().all() else table[column]
    out = out.sort_index(kind="stable")
    check_events(out["outcome"].to_numpy(), n_folds=n_folds, path=path)
    return out


def check_events(y: npt.ArrayLike, *, n_folds: int = 2, path: str | Path | None = None) -> tuple[int, int]:
    """Counts of events (1) and non-events (0); refuse one class or fewer of either than ``n_folds``.

    Stratified K-fold cross-validation needs at least ``n_folds`` subjects of each class.

    Returns
    -------
    tuple of int
        ``(n_events, n_non_events)``.
    """
    arr = np.asarray(y).astype(int)
    n_pos = int((arr == 1).sum())
    n_neg = int((arr == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError(
            f"the outcome has one class only ({n_pos} events, {n_neg} non-events in {arr.size} subjects); "
            "a signature needs both",
            path=path,
        )
    if min(n_pos, n_neg) < n_folds:
        raise DataError(
            f"{n_pos} events and {n_neg} non-events cannot fill {n_folds} stratified folds; "
            f"use at most {min(n_pos, n_neg)} folds or more subjects",
            path=path,
        )
    return n_pos, n_neg
