"""Agreement statistics between two mask sources: CCC, ICC, Bland–Altman, retention per class.

Definitions (per feature, over the subjects that have both sources):

* Lin's concordance correlation coefficient (Lin 1989), with population moments:
  ``CCC = 2 s_ab / (s_a^2 + s_b^2 + (mean_a - mean_b)^2)``; 95 % CI by a seeded percentile
  bootstrap over subjects.
* ICC(3,1) (two-way mixed, consistency, single rater; pingouin "ICC(C,1)") and ICC(2,1)
  (two-way random, absolute agreement, single rater; pingouin "ICC(A,1)") with pingouin's F-based
  95 % CIs (Shrout & Fleiss 1979; McGraw & Wong 1996).
* Bland–Altman: mean difference ``b - a`` and limits of agreement ``mean ± 1.96 SD`` (SD with N - 1).

Settings left as ``None`` (``cutoff``, ``n_boot``, ``min_subjects``) take the schema defaults of the
``stats:`` section (:func:`stats_setting`).

Degenerate cases are explicit, in the ``status`` column, never silent NaN:

* ``too_few_subjects``: fewer than ``min_subjects`` (config ``stats.min_subjects``) complete pairs; no
  statistic is computed.
* ``constant``: the feature takes one value for every subject within each source. ICC is
  undefined (0 / 0) and left NaN; CCC is reported as 1 when both sources give the same constant and
  0 otherwise. Such a feature cannot separate subjects, so it is excluded from the retention
  percentages (counted in ``n_constant``) and never called reproducible.
* ``ok``: everything computed. Bootstrap resamples in which CCC is undefined are skipped.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from medpipe.core.config import POOLED_IMAGES, with_defaults
from medpipe.core.errors import DataError
from medpipe.core.io import read_feature_table, save_png, write_tsv

logger = logging.getLogger(__name__)

#: Order of the feature classes in the retention table (the seed study's table).
CLASSES = ("shape", "first-order", "texture", "wavelet", "LoG")

FloatArray = npt.NDArray[np.float64]
#: ``stats:`` keys behind the arguments of this module and of :mod:`medpipe.stats.robustness`.
_SETTING_KEYS = {"cutoff": "ccc_cutoff", "n_boot": "bootstrap", "min_subjects": "min_subjects"}


@functools.cache
def _stats_defaults() -> dict[str, Any]:
    return with_defaults({}, "stats")


def stats_setting(name: str, value: Any) -> Any:
    """``value``, or when it is ``None`` the schema default of the ``stats:`` key behind argument ``name``.

    Parameters
    ----------
    name
        ``cutoff`` (``stats.ccc_cutoff``), ``n_boot`` (``stats.bootstrap``) or ``min_subjects``.
    value
        The value given by the caller, or ``None``.
    """
    return _stats_defaults()[_SETTING_KEYS[name]] if value is None else value


def lin_ccc(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Lin's concordance correlation coefficient of two paired samples.

    Returns 1.0 when both samples are the same constant, NaN for fewer than 2 pairs.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    if x.size < 2:
        return float("nan")
    return float(_ccc_rows(x[None, :], y[None, :])[0])


def _ccc_rows(x: FloatArray, y: FloatArray) -> FloatArray:
    """CCC of each row pair (vectorised; used by the bootstrap)."""
    mx, my = x.mean(axis=1), y.mean(axis=1)
    vx, vy = x.var(axis=1), y.var(axis=1)
    cov = ((x - mx[:, None]) * (y - my[:, None])).mean(axis=1)
    den = vx + vy + (mx - my) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, 2.0 * cov / np.where(den > 0, den, 1.0), np.nan)
    identical = np.all(x == y, axis=1) & (den == 0)
    return np.where(identical, 1.0, out)


def ccc_bootstrap_ci(
    a: npt.ArrayLike, b: npt.ArrayLike, *, n_boot: int | None = None, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of Lin's CCC, resampling subjects (pairs) with replacement."""
    n_boot = int(stats_setting("n_boot", n_boot))
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size < 2 or n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    values = _ccc_rows(x[idx], y[idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


@contextmanager
def _unrounded_pingouin() -> Iterator[None]:
    """pingouin rounds CI95 to 2 decimals by default; report them unrounded."""
    import pingouin as pg

    old = pg.options.get("round.column.CI95")
    pg.options["round.column.CI95"] = None
    try:
        yield
    finally:
        pg.options["round.column.CI95"] = old


def icc(ratings: npt.ArrayLike, *, min_subjects: int | None = None) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) with 95 % CIs for an ``n_subjects x n_raters`` matrix (pingouin).

    At least ``min_subjects`` rows are needed (``None``: config ``stats.min_subjects``).
    Returns keys ``icc21, icc21_ci_low, icc21_ci_high, icc31, icc31_ci_low, icc31_ci_high``.
    """
    import pingouin as pg

    least = int(stats_setting("min_subjects", min_subjects))
    r = np.asarray(ratings, dtype=float)
    if r.ndim != 2 or r.shape[0] < least or r.shape[1] < 2:
        raise ValueError(f"need >= {least} subjects x >= 2 raters, got shape {r.shape}")
    n, k = r.shape
    long = pd.DataFrame({"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n), "rating": r.ravel()})
    with _unrounded_pingouin(), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        table = pg.intraclass_corr(long, targets="target", raters="rater", ratings="rating")
    table = table.set_index("Type")
    out: dict[str, float] = {}
    for key, label in (("icc21", "ICC(A,1)"), ("icc31", "ICC(C,1)")):
        out[key] = float(table.at[label, "ICC"])
        ci = np.asarray(table.at[label, "CI95"], dtype=float)
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(ci[0]), float(ci[1])
    return out


def bland_altman(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float, float]:
    """Mean difference ``b - a`` and 95 % limits of agreement (mean ± 1.96 SD, SD with N - 1)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size < 2:
        return float("nan"), float("nan"), float("nan")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    return mean, mean - 1.96 * sd, mean + 1.96 * sd


def feature_group(image_type: str, feature_class: str) -> str:
    """Class of a feature in the retention table: shape, first-order, texture, wavelet, LoG."""
    if image_type.startswith("wavelet"):
        return "wavelet"
    if image_type.startswith("log-sigma"):
        return "LoG"
    if image_type != "original":
        return image_type
    if feature_class == "shape":
        return "shape"
    if feature_class == "firstorder":
        return "first-order"
    return "texture"


def agreement(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    cutoff: float | None = None,
    n_boot: int | None = None,
    seed: int = 0,
    min_subjects: int | None = None,
) -> dict[str, Any]:
    """All agreement statistics of one feature (paired values of two sources over subjects)."""
    cutoff = float(stats_setting("cutoff", cutoff))
    least = int(stats_setting("min_subjects", min_subjects))
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    nan = float("nan")
    row: dict[str, Any] = {
        "n": int(x.size),
        "mean_a": float(x.mean()) if x.size else nan,
        "mean_b": float(y.mean()) if y.size else nan,
    }
    keys = (
        "ccc",
        "ccc_ci_low",
        "ccc_ci_high",
        "icc31",
        "icc31_ci_low",
        "icc31_ci_high",
        "icc21",
        "icc21_ci_low",
        "icc21_ci_high",
        "mean_diff",
        "loa_low",
        "loa_high",
    )
    row.update(dict.fromkeys(keys, nan))
    if x.size < least:
        return {**row, "status": "too_few_subjects", "reproducible": False}
    row["mean_diff"], row["loa_low"], row["loa_high"] = bland_altman(x, y)
    if np.all(x == x[0]) and np.all(y == y[0]):
        value = lin_ccc(x, y)  # 1 when the two constants agree, 0 otherwise
        row.update(ccc=value, ccc_ci_low=value, ccc_ci_high=value)
        return {**row, "status": "constant", "reproducible": False}
    row["ccc"] = lin_ccc(x, y)
    row["ccc_ci_low"], row["ccc_ci_high"] = ccc_bootstrap_ci(x, y, n_boot=n_boot, seed=seed)
    row.update(icc(np.column_stack([x, y]), min_subjects=least))
    return {**row, "status": "ok", "reproducible": bool(row["ccc"] >= cutoff)}


def paired_values(features: pd.DataFrame, source_a: str, source_b: str) -> pd.DataFrame:
    """Wide table feature x subject pairs: columns ``image, region, feature, image_type, feature_class, ibsi_code,
    subject, a, b`` for subjects with finite values in both sources (pyradiomics rows only); a region's rows
    (the structure's, or a derived region's such as a peritumoral ring) pair only with the same region's."""
    rows = features[features["kind"] == "pyradiomics"]
    keys = ["image", "region", "feature", "image_type", "feature_class", "ibsi_code", "subject"]
    a = rows[rows["source"] == source_a][[*keys, "value"]].rename(columns={"value": "a"})
    b = rows[rows["source"] == source_b][[*keys, "value"]].rename(columns={"value": "b"})
    for name, part in ((source_a, a), (source_b, b)):
        if part.empty:
            raise DataError(
                f"no feature rows for mask source {name!r} (sources present: {sorted(features['source'].unique())})"
            )
    pairs = a.merge(b, on=keys, how="outer", indicator=True)
    lonely = sorted(pairs.loc[pairs["_merge"] != "both", "subject"].unique())
    if lonely:
        logger.warning("subjects without both mask sources, left out: %s", lonely)
    pairs = pairs[(pairs["_merge"] == "both") & np.isfinite(pairs["a"]) & np.isfinite(pairs["b"])]
    return pairs.drop(columns="_merge").sort_values(["image", "region", "feature", "subject"], kind="stable")


def reproducibility_table(
    features: pd.DataFrame,
    *,
    source_a: str = "human",
    source_b: str = "auto",
    cutoff: float | None = None,
    n_boot: int | None = None,
    seed: int = 0,
    min_subjects: int | None = None,
) -> pd.DataFrame:
    """Agreement statistics of every feature between two mask sources (one row per image, region and feature)."""
    cutoff = float(stats_setting("cutoff", cutoff))
    n_boot = int(stats_setting("n_boot", n_boot))
    least = int(stats_setting("min_subjects", min_subjects))
    pairs = paired_values(features, source_a, source_b)
    records = []
    for (image, region, feature, image_type, feature_class, code), group in pairs.groupby(
        ["image", "region", "feature", "image_type", "feature_class", "ibsi_code"], sort=True, dropna=False
    ):
        stats = agreement(
            group["a"].to_numpy(), group["b"].to_numpy(), cutoff=cutoff, n_boot=n_boot, seed=seed, min_subjects=least
        )
        records.append(
            {
                "image": image,
                "region": region,
                "feature": feature,
                "image_type": image_type,
                "feature_class": feature_class,
                "class": feature_group(str(image_type), str(feature_class)),
                "ibsi_code": "" if pd.isna(code) else code,
                **stats,
            }
        )
    return pd.DataFrame.from_records(records)


def retention_by_class(table: pd.DataFrame) -> pd.DataFrame:
    """Percentage of reproducible features per region, image and class (constant / too-few rows excluded, counted).

    Per region of ``table`` (the structure's own rows, and each derived region's), one block of rows per image
    (columns ``image``, ``region`` first), each with its classes and ``all``; with several images a last block
    ``image == "all"`` (:data:`~medpipe.core.config.POOLED_IMAGES`) pools that region's images.
    """
    parts = []
    for region in sorted(table["region"].astype(str).unique()) if len(table) else []:
        rows = table[table["region"].astype(str) == region]
        images = sorted(rows["image"].astype(str).unique())
        blocks = [(name, rows[rows["image"].astype(str) == name]) for name in images]
        if len(images) > 1:
            blocks.append((POOLED_IMAGES, rows))
        parts += [_retention_of_image(part).assign(image=name, region=region) for name, part in blocks]
    empty = {"image": pd.Series(dtype=str), "region": pd.Series(dtype=str)}
    out = pd.concat(parts, ignore_index=True) if parts else _retention_of_image(table).assign(**empty)
    return out[["image", "region", *[c for c in out.columns if c not in ("image", "region")]]]


def pooled(retention: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`retention_by_class` over every image: block ``all``, or the only image's (per region)."""
    images = retention["image"].astype(str)
    if not len(retention):
        return retention
    return retention[images == (POOLED_IMAGES if (images == POOLED_IMAGES).any() else images.iloc[0])]


def _retention_of_image(table: pd.DataFrame) -> pd.DataFrame:
    order = [c for c in CLASSES if c in set(table["class"])] + sorted(set(table["class"]) - set(CLASSES))
    records = []
    for name, part in [*((c, table[table["class"] == c]) for c in order), ("all", table)]:
        evaluable = part[part["status"] == "ok"]
        n_ok = int(evaluable["reproducible"].sum())
        records.append(
            {
                "class": name,
                "n_features": len(part),
                "n_evaluable": len(evaluable),
                "n_constant": int((part["status"] == "constant").sum()),
                "n_too_few_subjects": int((part["status"] == "too_few_subjects").sum()),
                "n_reproducible": n_ok,
                "percent_reproducible": (round(100.0 * n_ok / len(evaluable), 2) if len(evaluable) else float("nan")),
                "median_ccc": float(evaluable["ccc"].median()) if len(evaluable) else float("nan"),
            }
        )
    return pd.DataFrame.from_records(records)


def plot_ccc(table: pd.DataFrame, out: str | Path, *, cutoff: float, title: str) -> Path:
    """CCC of every feature (sorted, coloured by class, 95 % CI) with the cutoff line; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["status"] == "ok"].sort_values("ccc", kind="stable").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red")
    colours = dict(zip(CLASSES, palette, strict=True))
    groups = sorted(ok.groupby("class", sort=True), key=lambda g: -len(g[1]))  # small classes on top
    for name, part in groups:
        colour = colours.get(str(name), "tab:gray")
        ax.vlines(part.index, part["ccc_ci_low"], part["ccc_ci_high"], color=colour, alpha=0.25, lw=0.8)
        ax.scatter(part.index, part["ccc"], s=6, color=colour, label=f"{name} ({len(part)})")
    ax.axhline(cutoff, color="black", ls="--", lw=1, label=f"cutoff {cutoff:.2f}")
    ax.set_ylim(min(-0.05, float(ok["ccc"].min()) - 0.05) if len(ok) else -0.05, 1.05)
    ax.set_xlabel("feature (sorted by CCC)")
    ax.set_ylabel("Lin's CCC (95 % bootstrap CI)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_png(fig, out)


def read_features(features_tsv: str | Path) -> pd.DataFrame:
    """The long feature table of :func:`medpipe.radiomics.extract.collect` (via :mod:`medpipe.core.io`)."""
    return read_feature_table(features_tsv)


def reproducibility_report(
    features_tsv: str | Path,
    out_table: str | Path,
    out_retention: str | Path,
    out_plot: str | Path,
    *,
    source_a: str = "human",
    source_b: str = "auto",
    cutoff: float | None = None,
    n_boot: int | None = None,
    seed: int = 0,
    min_subjects: int | None = None,
) -> Path:
    """Per-feature agreement between two mask sources, retention per class, and the CCC plot.

    Parameters
    ----------
    features_tsv
        Long feature table of :func:`medpipe.radiomics.extract.collect`.
    out_table, out_retention, out_plot
        Per-feature statistics TSV, per-class retention TSV, CCC figure (PNG).
    source_a, source_b
        Mask sources compared (reference first); differences are ``b - a``.
    cutoff
        A feature is reproducible when its CCC >= cutoff (``None``: config ``stats.ccc_cutoff``).
    n_boot, seed
        Bootstrap resamples of the CCC CI (``None``: config ``stats.bootstrap``) and their seed (deterministic).
    min_subjects
        Fewest subjects with both sources for which statistics are computed (``None``: config
        ``stats.min_subjects``).

    Returns
    -------
    Path
        ``out_table``.
    """
    cutoff = float(stats_setting("cutoff", cutoff))
    features = read_features(features_tsv)
    table = reproducibility_table(
        features,
        source_a=source_a,
        source_b=source_b,
        cutoff=cutoff,
        n_boot=n_boot,
        seed=seed,
        min_subjects=min_subjects,
    )
    retention = retention_by_class(table)
    n_subjects = int(table["n"].max()) if len(table) else 0
    logger.info(
        "%d features, %d subjects: %s",
        len(table),
        n_subjects,
        "; ".join(f"{r['class']} {r['percent_reproducible']}%" for _, r in retention.iterrows()),
    )
    write_tsv(retention, out_retention)
    plot_ccc(
        table,
        out_plot,
        cutoff=cutoff,
        title=f"{source_b} vs {source_a} masks: {n_subjects} subjects, {len(table)} features",
    )
    return write_tsv(table, out_table)
