"""Selection of the next batch for correction, and the selection record the DAG reads back.

``results/labeling/round-<r>/selection.tsv`` (written by :func:`select_batch`, read by :func:`read_selection`;
the rules read it to know the next round's training set) has one row per pool subject::

    subject  score     agreement  rank  selected  reason
    demo03   0.9762    1.0        1     True      uncertainty rank 1 of 2 (mean entropy 0.976)
    demo04   0.9757    1.0        2     False     not selected

Strategies: ``uncertainty`` ranks by the mean normalised predictive entropy of the round's prediction
(:class:`medpipe.core.records.UncertaintyRecord` ``score``; higher first), then by lower ensemble agreement,
then by subject ID; ``random`` is a seeded permutation (seed and round); ``sheet_order`` takes the pool as the
sheet lists it. An explicit batch (``labeling.batches``) overrides the strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import read_tsv, write_tsv
from medpipe.core.records import UncertaintyRecord, read_uncertainty

logger = logging.getLogger(__name__)

SELECTION_COLUMNS = ["subject", "score", "agreement", "rank", "selected", "reason"]


def _order(records: Sequence[UncertaintyRecord], strategy: str, seed: int, round_index: int) -> list[str]:
    """Pool subjects in selection order (the records are in sheet order)."""
    names = [r.subject for r in records]
    if strategy == "uncertainty":
        key = {r.subject: (-r.score, r.agreement if r.agreement is not None else 1.0, r.subject) for r in records}
        return sorted(names, key=key.__getitem__)
    if strategy == "random":
        rng = np.random.default_rng([int(seed), int(round_index)])
        return [names[i] for i in rng.permutation(len(names))]
    if strategy == "sheet_order":
        return names
    raise ConfigError(f"labeling.strategy {strategy!r} is not one of uncertainty, random, sheet_order")


def _reason(strategy: str, rank: int, n: int, record: UncertaintyRecord, explicit: bool) -> str:
    if explicit:
        return "listed in labeling.batches"
    if strategy == "uncertainty":
        return f"uncertainty rank {rank} of {n} (mean entropy {record.score:.3f})"
    return f"{strategy.replace('_', ' ')} rank {rank} of {n}"


def select_batch(
    uncertainty: Sequence[str | Path],
    out_tsv: str | Path,
    *,
    pool: Sequence[str],
    strategy: str,
    batch_size: int,
    seed: int,
    round_index: int,
    explicit: Sequence[str] = (),
) -> list[str]:
    """Rank the pool and write the selection record; return the selected subjects (selection order).

    Parameters
    ----------
    uncertainty
        One uncertainty record per pool subject (the round's predictions).
    out_tsv
        ``selection.tsv`` (see the module docstring).
    pool
        Unlabelled candidates of the round, in sheet order.
    strategy, batch_size, seed, round_index
        Selection settings (``labeling.strategy``, ``labeling.batch_size``, master seed, round).
    explicit
        The round's configured batch (``labeling.batches``); overrides strategy and batch size.

    Raises
    ------
    DataError
        An uncertainty record is missing for a pool subject, or belongs to none.
    ConfigError
        An explicit batch names a subject outside the pool.
    """
    by_subject = {rec.subject: rec for rec in (read_uncertainty(p) for p in uncertainty)}
    missing = [s for s in pool if s not in by_subject]
    if missing or len(by_subject) != len(pool):
        raise DataError(
            f"round {round_index}: uncertainty records {sorted(by_subject)} do not match the pool {list(pool)}"
        )
    outside = [s for s in explicit if s not in pool]
    if outside:
        raise ConfigError(f"labeling.batches[{round_index}]: {outside} are not in the round's pool {list(pool)}")
    records = [by_subject[s] for s in pool]
    order = list(explicit) + [s for s in _order(records, strategy, seed, round_index) if s not in explicit]
    chosen = set(explicit) if explicit else set(order[: int(batch_size)])
    rows = []
    for rank, s in enumerate(order, start=1):
        rec = by_subject[s]
        rows.append(
            {
                "subject": s,
                "score": rec.score,
                "agreement": rec.agreement,
                "rank": rank,
                "selected": s in chosen,
                "reason": _reason(strategy, rank, len(order), rec, bool(explicit)) if s in chosen else "not selected",
            }
        )
    write_tsv(pd.DataFrame(rows, columns=SELECTION_COLUMNS), out_tsv)
    selected = [s for s in order if s in chosen]
    logger.info("round %d: selected %s (%s) from a pool of %d", round_index, selected, strategy, len(order))
    return selected


def read_selection(path: str | Path) -> list[str]:
    """The selected subjects of a selection record, in selection order.

    Raises
    ------
    DataError
        The file lacks a column of :data:`SELECTION_COLUMNS`.
    """
    table = read_tsv(path, dtype={"subject": str, "reason": str})
    missing = [c for c in SELECTION_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"selection record lacks columns {missing}", path=path)
    selected = table["selected"].astype(str).str.lower() == "true"
    return [str(s) for s in table.loc[selected, "subject"]]
