"""K-fold cross-validation splits by subject, deterministic from a seed.

The assignment depends only on the *set* of subjects, ``k`` and ``seed``: subjects are sorted
first, so the order of rows in the subject sheet never changes a split. Fold sizes differ by at
most one subject.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.core.errors import ConfigError
from medpipe.core.sidecar import write_json

logger = logging.getLogger(__name__)


def assign_folds(subjects: Sequence[str], k: int, seed: int) -> dict[str, int]:
    """Assign every subject to the fold in which it is held out.

    Parameters
    ----------
    subjects
        Subject IDs (any order; duplicates are an error).
    k
        Number of folds (``2 <= k <= len(subjects)``).
    seed
        Seed of the permutation.

    Returns
    -------
    dict
        ``subject -> fold`` (0-based), keys in sorted subject order.
    """
    ordered = sorted(str(s) for s in subjects)
    if len(set(ordered)) != len(ordered):
        dupes = sorted({s for s in ordered if ordered.count(s) > 1})
        raise ConfigError(f"duplicate subject IDs in the split: {dupes}")
    if not isinstance(k, int) or k < 2:
        raise ConfigError(f"segmentation.folds must be an integer >= 2, got {k!r}")
    if k > len(ordered):
        raise ConfigError(
            f"segmentation.folds = {k} exceeds the number of subjects to train on ({len(ordered)}: labelled "
            "subjects whose sheet column set is train)"
        )
    rng = np.random.default_rng(int(seed))
    perm = rng.permutation(len(ordered))
    folds = {ordered[int(idx)]: rank % k for rank, idx in enumerate(perm)}
    return dict(sorted(folds.items()))


def folds_table(subjects: Sequence[str], k: int, seed: int, val_fraction: float = 0.0) -> dict[str, Any]:
    """Describe a k-fold split: per fold the held-out ``test`` subjects and the ``train``/``val`` lists.

    ``val`` is :func:`validation_subset` of the fold's other subjects: ``train_fold`` draws the same
    subset (same seed) to monitor the learning curve and does not train on it.
    """
    assignment = assign_folds(subjects, k, seed)
    folds: list[dict[str, Any]] = []
    for fold in range(k):
        test = [s for s, f in assignment.items() if f == fold]
        rest = [s for s, f in assignment.items() if f != fold]
        val = validation_subset(rest, val_fraction, int(seed) + fold)
        train = [s for s in rest if s not in val]
        folds.append({"fold": fold, "train": train, "val": val, "test": test})
    return {"k": k, "seed": int(seed), "assignment": assignment, "folds": folds}


def write_folds(subjects: Sequence[str], k: int, seed: int, out: str | Path, val_fraction: float = 0.0) -> Path:
    """Write the split of :func:`folds_table` as JSON (sorted keys, byte-identical on re-runs)."""
    table = folds_table(subjects, k, seed, val_fraction)
    logger.info(
        "split %d subjects into %d folds (seed %d): sizes %s",
        len(table["assignment"]),
        k,
        seed,
        [len(f["test"]) for f in table["folds"]],
    )
    return write_json(table, out)


def read_folds(path: str | Path) -> dict[str, Any]:
    """Read a split written by :func:`write_folds`, checking its structure."""
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read fold file: {exc}", path=path) from exc
    if "folds" not in data or "assignment" not in data:
        raise ConfigError("fold file lacks 'folds' or 'assignment'", path=path)
    return data


def validation_subset(subjects: Sequence[str], fraction: float, seed: int) -> list[str]:
    """Seeded subset (``fraction`` of ``subjects``, >= 1 when positive) held out to monitor training."""
    rest = sorted(str(s) for s in subjects)
    n_val = max(1, round(fraction * len(rest))) if fraction > 0 and len(rest) > 1 else 0
    if not n_val:
        return []
    rng = np.random.default_rng(int(seed))
    return sorted(str(s) for s in rng.choice(rest, size=n_val, replace=False))
