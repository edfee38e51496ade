"""Robustness of radiomics features to mask perturbations (config ``radiomics.perturbations``).

For every perturbation ``p`` (see :mod:`medpipe.radiomics.perturb`) each feature's agreement between the human
mask and its perturbed copy is computed with :func:`medpipe.stats.agreement.agreement` (Lin's CCC with a
bootstrap CI, ICC(3,1), ICC(2,1), Bland–Altman), exactly as for human vs automatic masks. On top,
for two or more perturbations, ICC(3,1) and ICC(2,1) over all of them at once (human + every
perturbation as raters, subjects that have every source). A feature is *robust* when it is
reproducible (CCC >= cutoff, status ``ok``) under every perturbation; the per-class table gives the
retention for each perturbation and for all of them together (``perturbation = all``), so a user can
keep only robust features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.core.errors import DataError
from medpipe.core.io import save_png, write_tsv
from medpipe.stats.agreement import (
    CLASSES,
    icc,
    pooled,
    read_features,
    reproducibility_table,
    retention_by_class,
    stats_setting,
)

logger = logging.getLogger(__name__)

_KEYS = ["image", "region", "feature", "image_type", "feature_class", "class", "ibsi_code"]
_PER_PERTURBATION = ["ccc", "ccc_ci_low", "ccc_ci_high", "icc31", "icc21", "mean_diff", "status", "reproducible"]


def _icc_all(features: pd.DataFrame, sources: Sequence[str], *, min_subjects: int) -> pd.DataFrame:
    """ICC(3,1) / ICC(2,1) of every feature with all ``sources`` as raters (complete subjects only)."""
    rows = features[(features["kind"] == "pyradiomics") & features["source"].isin(sources)]
    index = ["image", "region", "feature", "subject"]
    wide = rows.pivot_table(index=index, columns="source", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(sources)).dropna()
    records = []
    for (image, region, feature), part in wide.groupby(level=index[:3], sort=True):
        ratings = part.to_numpy(dtype=float)
        record: dict[str, object] = {"image": image, "region": region, "feature": feature, "n_all": len(ratings)}
        if len(ratings) >= min_subjects and not np.all(ratings == ratings[0, 0]):
            record.update({f"{k}_all": v for k, v in icc(ratings, min_subjects=min_subjects).items()})
        records.append(record)
    return pd.DataFrame.from_records(records)


def robustness_tables(
    features: pd.DataFrame,
    *,
    reference: str = "human",
    perturbations: Sequence[str],
    cutoff: float | None = None,
    n_boot: int | None = None,
    seed: int = 0,
    min_subjects: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-feature robustness table and per-class retention (long: one block per perturbation + all).

    Parameters
    ----------
    features
        Long feature table (:func:`medpipe.radiomics.extract.collect`) holding ``reference`` and every perturbation.
    reference
        Mask source the perturbations were made from.
    perturbations
        Perturbed mask sources (``erode``, ``dilate``, ``shift``).
    cutoff, n_boot, seed, min_subjects
        CCC cutoff, its bootstrap and the fewest subjects (as in
        :func:`medpipe.stats.agreement.reproducibility_table`; ``None``: the config ``stats:`` defaults).

    Returns
    -------
    tuple of pandas.DataFrame
        Per feature: keys, ``<column>_<perturbation>`` for each perturbation, ICC over all sources
        (``icc31_all``, ...), ``robust``; per class: ``perturbation`` + :func:`retention_by_class` columns.
    """
    if not perturbations:
        raise DataError("no mask perturbations configured (radiomics.perturbations)")
    least = int(stats_setting("min_subjects", min_subjects))
    parts, blocks = [], []
    for name in perturbations:
        table = reproducibility_table(
            features,
            source_a=reference,
            source_b=name,
            cutoff=cutoff,
            n_boot=n_boot,
            seed=seed,
            min_subjects=least,
        )
        blocks.append(retention_by_class(table).assign(perturbation=name))
        parts.append(table[_KEYS + _PER_PERTURBATION].rename(columns={c: f"{c}_{name}" for c in _PER_PERTURBATION}))
    merged = reduce(lambda left, right: left.merge(right, on=_KEYS, how="outer"), parts)
    ok = np.logical_and.reduce([merged[f"status_{p}"].eq("ok").to_numpy() for p in perturbations])
    reproducible = np.logical_and.reduce(
        [merged[f"reproducible_{p}"].fillna(False).astype(bool).to_numpy() for p in perturbations]
    )
    merged["robust"] = ok & reproducible
    if len(perturbations) >= 2:
        icc_all = _icc_all(features, [reference, *perturbations], min_subjects=least)
        merged = merged.merge(icc_all, on=["image", "region", "feature"], how="left")
    combined = merged[_KEYS].assign(
        status=np.where(ok, "ok", "not_evaluable_for_every_perturbation"),
        reproducible=merged["robust"],
        ccc=merged[[f"ccc_{p}" for p in perturbations]].min(axis=1),  # the worst perturbation
    )
    blocks.append(retention_by_class(combined).assign(perturbation="all"))
    by_class = pd.concat(blocks, ignore_index=True)
    by_class = by_class[["perturbation", *[c for c in by_class.columns if c != "perturbation"]]]
    order = ["image", "region", "class", "feature"]
    return merged.sort_values(order, kind="stable").reset_index(drop=True), by_class


def plot_retention(by_class: pd.DataFrame, out: str | Path, *, cutoff: float, title: str) -> Path:
    """Grouped bars: percentage of reproducible features per class, one bar per perturbation; PNG.

    One panel per region (the structure's, then each derived region's). With several images, the bars are of the
    rows pooled over them (:func:`medpipe.stats.agreement.pooled`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_class = pd.concat([pooled(part) for _, part in by_class.groupby("perturbation", sort=False)])
    classes = [c for c in [*CLASSES, "all"] if c in set(by_class["class"])]
    names = list(dict.fromkeys(by_class["perturbation"]))
    regions = sorted(by_class["region"].astype(str).unique()) or [""]
    fig, axes = plt.subplots(len(regions), 1, figsize=(10, 4.5 * len(regions)), dpi=100, squeeze=False)
    width = 0.8 / max(len(names), 1)
    for ax, region in zip(axes[:, 0], regions, strict=True):
        rows = by_class[by_class["region"].astype(str) == region]
        for i, name in enumerate(names):
            part = rows[rows["perturbation"] == name].set_index("class").reindex(classes)
            xs = np.arange(len(classes)) + (i - (len(names) - 1) / 2) * width
            bars = ax.bar(xs, part["percent_reproducible"].fillna(0.0), width, label=name)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(np.arange(len(classes)), classes)
        ax.set_ylim(0, 110)
        ax.set_ylabel(f"features with CCC >= {cutoff:.2f} (%)")
        ax.set_title(f"{title}: region {region}" if len(regions) > 1 else title)
        ax.legend(title="perturbation", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_png(fig, out)


def robustness_report(
    features_tsv: str | Path,
    out_table: str | Path,
    out_by_class: str | Path,
    out_plot: str | Path,
    *,
    reference: str = "human",
    perturbations: Sequence[str],
    cutoff: float | None = None,
    n_boot: int | None = None,
    seed: int = 0,
    min_subjects: int | None = None,
) -> Path:
    """Write the per-feature robustness TSV, the per-class retention TSV and its bar chart.

    Arguments as in :func:`robustness_tables`; ``None`` takes the config ``stats:`` default.

    Returns
    -------
    Path
        ``out_table``.
    """
    cutoff = float(stats_setting("cutoff", cutoff))
    features = read_features(features_tsv)
    table, by_class = robustness_tables(
        features,
        reference=reference,
        perturbations=perturbations,
        cutoff=cutoff,
        n_boot=n_boot,
        seed=seed,
        min_subjects=min_subjects,
    )
    all_rows = pooled(by_class)
    all_rows = all_rows[all_rows["class"] == "all"]
    logger.info(
        "robustness of %d features: %s",
        len(table),
        "; ".join(f"{r['region']} {r['perturbation']} {r['percent_reproducible']}%" for _, r in all_rows.iterrows()),
    )
    write_tsv(by_class, out_by_class)
    n_subjects = int(features.loc[features["source"] == reference, "subject"].nunique())
    plot_retention(
        by_class,
        out_plot,
        cutoff=cutoff,
        title=f"{reference} mask vs perturbed copies: {n_subjects} subjects, {len(table)} features",
    )
    return write_tsv(table, out_table)
