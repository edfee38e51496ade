"""Segmentation metrics per subject and class, and their summary over subjects.

Overlap metrics (Dice, Jaccard, precision, recall) are computed from voxel counts. Surface
distances (Hausdorff, HD95, mean symmetric surface distance) use MONAI's
``compute_hausdorff_distance`` / ``compute_average_surface_distance`` with the voxel spacing of
the grid, so anisotropic voxels are handled in millimetres. Surfaces are the mask voxels with a
face-neighbour outside the mask (MONAI's binary-erosion edges); HD95 is the larger of the two
directed 95th percentiles; the mean surface distance pools the distances of both surfaces.

Empty masks (defined explicitly):

* both masks empty: Dice = Jaccard = precision = recall = 1, all distances 0, relative volume
  difference 0;
* exactly one mask empty: Dice = Jaccard = precision = recall = 0; distances are undefined
  (infinite) and written as NaN with ``empty_mask`` naming the empty side (``auto`` or
  ``human``); relative volume difference is -1 when the automatic mask is empty and NaN when the
  human mask is empty.

Summaries exclude NaN values and report how many subjects contributed (``n``).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from medpipe.core.config import sheet_sets
from medpipe.core.errors import DataError
from medpipe.core.geometry import check_same_grid, geometry_of
from medpipe.core.io import load_nifti, save_png, write_tsv

logger = logging.getLogger(__name__)

#: Metric columns written per subject and class, in order.
METRICS = (
    "dice",
    "jaccard",
    "hausdorff_mm",
    "hd95_mm",
    "msd_mm",
    "precision",
    "recall",
    "volume_auto_ml",
    "volume_human_ml",
    "rel_volume_diff",
)
#: Representation in the metric tables: undefined distances as ``NaN``, floats with 10 significant digits.
TSV_FORMAT = {"na_rep": "NaN", "float_format": "%.10g"}

#: Subject-sheet sets in report order: cross-validation first, then internal test, then external.
SET_ORDER = sheet_sets()
#: Metrics shown in the summary box plot.
PLOT_METRICS = ("dice", "jaccard", "hd95_mm", "msd_mm")


def surface_distances(
    auto: npt.NDArray[np.bool_], human: npt.NDArray[np.bool_], spacing: Sequence[float]
) -> dict[str, float]:
    """Hausdorff, HD95 and mean symmetric surface distance (mm) of two non-empty masks (MONAI)."""
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    a = np.asarray(auto, dtype=bool)[None, None]
    h = np.asarray(human, dtype=bool)[None, None]
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal call (always_return_as_numpy)
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(a, h, include_background=True, spacing=sp)
        hd95 = compute_hausdorff_distance(a, h, include_background=True, spacing=sp, percentile=95)
        msd = compute_average_surface_distance(a, h, include_background=True, symmetric=True, spacing=sp)
    return {"hausdorff_mm": float(hd.item()), "hd95_mm": float(hd95.item()), "msd_mm": float(msd.item())}


def pair_metrics(auto: npt.NDArray[Any], human: npt.NDArray[Any], spacing: Sequence[float]) -> dict[str, Any]:
    """All metrics of one binary mask pair on one grid (see the module docstring for empty masks).

    Parameters
    ----------
    auto, human
        Binary masks (non-zero = inside) of the same shape, indexed ``[i, j, k]``.
    spacing
        Voxel size in mm along ``i, j, k``.

    Returns
    -------
    dict
        The :data:`METRICS` plus ``empty_mask`` (``none``, ``auto``, ``human`` or ``both``).
    """
    a = np.asarray(auto) != 0
    h = np.asarray(human) != 0
    if a.shape != h.shape:
        raise DataError(f"mask shapes differ: {a.shape} vs {h.shape}")
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    n_a, n_h = int(a.sum()), int(h.sum())
    tp = int(np.count_nonzero(a & h))
    out: dict[str, Any] = {"volume_auto_ml": n_a * voxel_ml, "volume_human_ml": n_h * voxel_ml}
    if n_a == 0 and n_h == 0:
        out.update(
            dice=1.0,
            jaccard=1.0,
            precision=1.0,
            recall=1.0,
            rel_volume_diff=0.0,
            hausdorff_mm=0.0,
            hd95_mm=0.0,
            msd_mm=0.0,
            empty_mask="both",
        )
        return out
    out.update(
        dice=2.0 * tp / (n_a + n_h),
        jaccard=tp / (n_a + n_h - tp),
        precision=tp / n_a if n_a else 0.0,
        recall=tp / n_h if n_h else 0.0,
        rel_volume_diff=(n_a - n_h) / n_h if n_h else math.nan,
    )
    if n_a == 0 or n_h == 0:
        out.update(hausdorff_mm=math.nan, hd95_mm=math.nan, msd_mm=math.nan, empty_mask="auto" if n_a == 0 else "human")
        return out
    out.update(surface_distances(a, h, spacing))
    out["empty_mask"] = "none"
    return out


def _label_value(values: Sequence[int]) -> int | str:
    """``label_value`` of a row: the class value, or a region's values joined by ``+`` (``1+2``)."""
    return int(values[0]) if len(values) == 1 else "+".join(str(int(v)) for v in values)


def evaluate_pair(
    auto: str | Path,
    human: str | Path,
    out_tsv: str | Path,
    *,
    subject: str,
    labels: Mapping[str, int | Sequence[int]],
) -> Path:
    """Score the automatic mask against the human mask of one subject, per class.

    Parameters
    ----------
    auto, human
        Label maps (NIfTI) on the same native grid (checked).
    out_tsv
        Destination TSV: one row per entry of ``labels`` with ``subject``, ``label``, ``label_value``, the
        :data:`METRICS` and ``empty_mask``.
    subject
        Subject ID (named in errors and written to the table).
    labels
        Row name -> label value, e.g. ``{"lesion": 1}``, or values whose union is scored (an evaluation region,
        ``{"whole": [1, 2]}``; :func:`medpipe.convert.classes.evaluation_labels`).
    """
    auto_img = load_nifti(auto, subject=subject)
    human_img = load_nifti(human, subject=subject)
    geom = geometry_of(auto_img)
    check_same_grid(geom, geometry_of(human_img), what="automatic vs human mask", subject=subject, path=auto)
    a = np.asarray(auto_img.dataobj)
    h = np.asarray(human_img.dataobj)
    if not labels:
        raise DataError("no labels to evaluate (labels mapping is empty)", subject=subject, path=out_tsv)
    rows = []
    for name, value in labels.items():
        values = [value] if isinstance(value, int) else [int(v) for v in value]  # a class, or a region's classes
        row: dict[str, Any] = {"subject": subject, "label": name, "label_value": _label_value(values)}
        row.update(pair_metrics(np.isin(a, values), np.isin(h, values), geom.spacing))
        logger.info(
            "subject %s label %s: dice %.4f hd95 %.3f mm msd %.3f mm (empty: %s)",
            subject,
            name,
            row["dice"],
            row["hd95_mm"],
            row["msd_mm"],
            row["empty_mask"],
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=["subject", "label", "label_value", *METRICS, "empty_mask"])
    return write_metrics(table, out_tsv)


def write_metrics(table: pd.DataFrame, out: str | Path) -> Path:
    """Write a metrics table as TSV (:func:`medpipe.core.io.write_tsv`): see :data:`TSV_FORMAT`."""
    return write_tsv(table, out, **TSV_FORMAT)


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read a metrics TSV; subject IDs and labels stay strings (``001`` is not the number 1)."""
    return pd.read_csv(
        path,
        sep="\t",
        dtype={"subject": str, "label": str, "empty_mask": str, "set": str, "site": str},
        keep_default_na=False,
        na_values=["NaN"],
    )


def bootstrap_ci(
    values: npt.NDArray[np.float64], *, seed: int, n_boot: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (NaN when fewer than 2 values)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def summary_table(
    metrics: pd.DataFrame, *, seed: int, n_boot: int = 2000, by: Sequence[str] = ("set",)
) -> pd.DataFrame:
    """Mean, SD, median, min, max and 95 % bootstrap CI of the mean per group, class and metric (NaN skipped).

    ``by``: the grouping columns before the class (``set``; ``set``, ``site`` for the per-site table), in
    :data:`SET_ORDER` for ``set``.
    """
    rows = []
    keys = [*by, "label"]
    order = {s: i for i, s in enumerate(SET_ORDER)}
    groups = sorted(metrics.groupby(keys, sort=True), key=lambda kv: order.get(kv[0][0], len(order)) if by else 0)
    for values, group in groups:
        for k, metric in enumerate(METRICS):
            v = group[metric].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            lo, hi = bootstrap_ci(v, seed=seed + k, n_boot=n_boot)
            rows.append(
                {
                    **dict(zip(keys, values, strict=True)),
                    "metric": metric,
                    "n": int(v.size),
                    "n_missing": int(len(group) - v.size),
                    "mean": float(v.mean()) if v.size else math.nan,
                    "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                    "median": float(np.median(v)) if v.size else math.nan,
                    "min": float(v.min()) if v.size else math.nan,
                    "max": float(v.max()) if v.size else math.nan,
                    "ci95_low": lo,
                    "ci95_high": hi,
                }
            )
    return pd.DataFrame(rows)


def with_sets(
    metrics: pd.DataFrame,
    sets: Mapping[str, str] | None,
    sites: Mapping[str, str] | None,
    *,
    path: str | Path | None = None,
) -> pd.DataFrame:
    """``metrics`` with the subjects' ``set`` and ``site`` as the 2nd and 3rd columns.

    Raises
    ------
    DataError
        A subject missing from ``sets`` or ``sites``, or a set not in :data:`SET_ORDER`.
    """
    subjects = metrics["subject"].astype(str)
    out = metrics.drop(columns=[c for c in ("set", "site") if c in metrics.columns])
    for position, (column, mapping, default) in enumerate((("set", sets, "train"), ("site", sites, ""))):
        mapping = mapping if mapping is not None else dict.fromkeys(subjects, default)
        missing = sorted(set(subjects) - set(mapping))
        if missing:
            raise DataError(f"no {column} given for subject(s) {missing}", path=path)
        out.insert(1 + position, column, [str(mapping[s]) for s in subjects])
    unknown = sorted(set(out["set"]) - set(SET_ORDER))
    if unknown:
        raise DataError(f"unknown set(s) {unknown}; allowed: {list(SET_ORDER)}", path=path)
    return out


def rank_cases(metrics: pd.DataFrame, *, metric: str = "dice") -> dict[str, str]:
    """Best, median and worst subject by the mean of ``metric`` over classes (ties: subject order)."""
    per_subject = metrics.groupby("subject", sort=True)[metric].mean().sort_values(kind="stable")
    if per_subject.empty:
        return {}
    idx = per_subject.index.tolist()
    return {"best": str(idx[-1]), "median": str(idx[(len(idx) - 1) // 2]), "worst": str(idx[0])}


def summarise(
    tables: Iterable[str | Path],
    out_metrics: str | Path,
    out_summary: str | Path,
    out_plot: str | Path,
    *,
    seed: int,
    n_boot: int = 2000,
    qc_images: Mapping[str, str | Path] | Iterable[str | Path] | None = None,
    out_cases: str | Path | None = None,
    sets: Mapping[str, str] | None = None,
    sites: Mapping[str, str] | None = None,
    out_by_site: str | Path | None = None,
) -> Path:
    """Concatenate per-subject metric tables and summarise them per set (and per site).

    Parameters
    ----------
    tables
        Per-subject TSVs written by :func:`evaluate_pair`.
    out_metrics
        All rows, sorted by subject and label.
    out_summary
        Per set (``train`` = cross-validation, ``test``, ``external``), class and metric: n, n_missing, mean,
        sd, median, min, max, ci95_low, ci95_high (percentile bootstrap of the mean, ``n_boot`` resamples,
        seeded by ``seed``).
    out_plot
        Box plots (one panel per metric in :data:`PLOT_METRICS`) with the subjects as points.
    seed
        Seed of the bootstrap.
    n_boot
        Number of bootstrap resamples.
    qc_images, out_cases
        Subject -> overlay PNG (auto vs human on the image), or PNGs named ``sub-<id>_...``; when
        both are given, the overlays of the best, median and worst subject by Dice are stacked
        into ``out_cases``.
    sets, sites
        Subject -> sheet ``set`` and ``site`` (every subject ``train`` at no site when not given); written
        as columns of ``out_metrics``.
    out_by_site
        The summary per set, site and class (optional).

    Returns
    -------
    Path
        ``out_summary``.
    """
    frames = [read_metrics(t) for t in tables]
    if not frames:
        raise DataError("no per-subject metric tables to summarise", path=out_summary)
    metrics = pd.concat(frames, ignore_index=True).sort_values(["subject", "label"], kind="stable")
    metrics = with_sets(metrics, sets, sites, path=out_metrics)
    write_metrics(metrics, out_metrics)
    write_metrics(summary_table(metrics, seed=seed, n_boot=n_boot), out_summary)
    if out_by_site is not None:
        write_metrics(summary_table(metrics, seed=seed, n_boot=n_boot, by=("set", "site")), out_by_site)
    save_metric_boxplots(metrics, PLOT_METRICS, out_plot)
    if out_cases is not None:
        if qc_images is None:
            raise DataError("out_cases needs qc_images (subject -> overlay PNG)", path=out_cases)
        pngs = _by_subject(qc_images)
        cases = rank_cases(metrics)
        missing = sorted({s for s in cases.values() if s not in pngs})
        if missing:
            raise DataError(f"no overlay PNG for subject(s) {missing}", path=out_cases)
        save_case_panel({f"{k}: sub-{s}": pngs[s] for k, s in cases.items()}, out_cases)
    logger.info("summarised %d rows from %d tables", len(metrics), len(frames))
    return Path(out_summary)


def _by_subject(images: Mapping[str, str | Path] | Iterable[str | Path]) -> dict[str, str | Path]:
    if isinstance(images, Mapping):
        return dict(images)
    out: dict[str, str | Path] = {}
    for p in images:
        match = re.match(r"sub-([A-Za-z0-9]+)_", Path(p).name)
        if match is None:
            raise DataError("overlay PNG name does not start with sub-<id>_", path=p)
        out[match.group(1)] = p
    return out


def save_metric_boxplots(metrics: pd.DataFrame, names: Sequence[str], out: str | Path) -> Path:
    """One box plot per metric (classes side by side) with every subject drawn as a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted(metrics["label"].unique().tolist())
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    rng = np.random.default_rng(0)  # horizontal jitter of the points only
    for ax, name in zip(axes[0], names, strict=True):
        data = [metrics.loc[metrics["label"] == lab, name].to_numpy(dtype=float) for lab in labels]
        data = [d[np.isfinite(d)] for d in data]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        for pos, d in enumerate(data, start=1):
            ax.scatter(pos + rng.uniform(-0.12, 0.12, d.size), d, s=12, alpha=0.7, color="#0a84ff")
        ax.set_title(name)
    fig.tight_layout()
    return save_png(fig, out, dpi=90)


def save_case_panel(images: Mapping[str, str | Path], out: str | Path) -> Path:
    """Stack existing overlay PNGs (title -> PNG) into one figure, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(images), 1, figsize=(10, 3.9 * len(images)), squeeze=False)
    for ax, (title, png) in zip(axes[:, 0], images.items(), strict=True):
        ax.imshow(plt.imread(str(png)))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return save_png(fig, out, dpi=90)
