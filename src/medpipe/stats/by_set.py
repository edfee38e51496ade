"""Human-vs-automatic retention per subject-sheet set and site (internal vs external validation).

The reproducibility statistics of :mod:`.agreement` (Lin's CCC with its bootstrap CI, ICC, status) computed on
the subjects of one set (``train`` = cross-validated masks, ``test``, ``external``: masks of the fold ensemble)
or of one set and site at a time, then the per-class retention of each: the reference study's internal vs external
table. A group with fewer than ``stats.min_subjects`` subjects with both mask sources has every feature
``too_few_subjects`` (retention NaN, counted), so the row says why it is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.core.config import sheet_sets
from medpipe.core.io import write_tsv
from medpipe.stats.agreement import pooled, read_features, reproducibility_table, retention_by_class, stats_setting

logger = logging.getLogger(__name__)


def _groups(
    sets: Mapping[str, str], sites: Mapping[str, str], subjects: Sequence[str]
) -> list[tuple[str, str, list[str]]]:
    """(set, site, subjects): each set present (sheet order) with all its sites (``all``), then per site."""
    out: list[tuple[str, str, list[str]]] = []
    for set_name in sheet_sets():
        members = sorted(s for s in subjects if sets.get(s, "train") == set_name)
        if not members:
            continue
        out.append((set_name, "all", members))
        names = sorted({str(sites.get(s, "")) for s in members})
        if len(names) > 1:
            out += [(set_name, site, [s for s in members if str(sites.get(s, "")) == site]) for site in names]
    return out


def retention_by_set(
    features: pd.DataFrame,
    *,
    sets: Mapping[str, str],
    sites: Mapping[str, str],
    source_a: str = "human",
    source_b: str = "auto",
    cutoff: float | None = None,
    n_boot: int | None = None,
    seed: int = 0,
    min_subjects: int | None = None,
    whole: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-class retention for every set (and site within a set that has several): columns ``set``, ``site``,
    ``n_subjects`` and those of :func:`medpipe.stats.agreement.retention_by_class`.

    ``whole``: the reproducibility table of all subjects when already computed (reused, not recomputed, for a
    group that holds every subject, e.g. a run whose sheet has no ``set`` column)."""
    least = int(stats_setting("min_subjects", min_subjects))
    subjects = sorted(features["subject"].astype(str).unique())
    parts = []
    for set_name, site, members in _groups(sets, sites, subjects):
        rows = features[features["subject"].astype(str).isin(members)]
        if whole is not None and members == subjects:
            table = whole
        else:
            table = reproducibility_table(
                rows, source_a=source_a, source_b=source_b, cutoff=cutoff, n_boot=n_boot, seed=seed, min_subjects=least
            )
        retention = retention_by_class(table)
        n = int(table["n"].max()) if len(table) else 0
        retention.insert(0, "n_subjects", n)
        retention.insert(0, "site", site)
        retention.insert(0, "set", set_name)
        parts.append(retention)
        whole_set = pooled(retention)
        overall = whole_set.loc[whole_set["class"] == "all", "percent_reproducible"].iloc[0]
        logger.info("retention, set %s, site %s (%d subjects): %s %% of all features", set_name, site, n, overall)
    return pd.concat(parts, ignore_index=True)


def retention_by_set_report(
    features_tsv: str | Path, out: str | Path, *, whole_table: str | Path | None = None, **settings: Any
) -> Path:
    """Write :func:`retention_by_set` of the feature table (rule ``reproducibility``).

    ``whole_table``: the per-feature table of all subjects that
    :func:`medpipe.stats.agreement.reproducibility_report` wrote; ``settings``: the keyword arguments of
    :func:`retention_by_set` (``sets``, ``sites``, sources, cutoff, bootstrap, seed, min_subjects).
    """
    whole = (
        pd.read_csv(whole_table, sep="\t", keep_default_na=False, na_values=["NaN", "NA", ""]) if whole_table else None
    )
    return write_tsv(retention_by_set(read_features(features_tsv), whole=whole, **settings), out)
