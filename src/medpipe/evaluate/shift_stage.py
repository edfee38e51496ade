"""The domain-shift rules' work (:mod:`.shift`, :mod:`.shift_table`): facts from files, tables, figure.

``shift_reference`` (rule of a training run): the training subjects' facts with their cross-validated
Dice from ``evaluate/metrics.tsv`` -> ``results/evaluate/shift_reference.json`` (copied into the model
bundle). ``shift_flags`` (every run that segments): every subject's facts against the run's reference or
the bundle's -> ``shift_flags.tsv`` (one row per subject), ``shift_performance.tsv`` (per set and flag),
``shift_flags.png`` and one review record per subject.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.core.config import sheet_sets
from medpipe.core.errors import DataError
from medpipe.core.io import load_nifti, write_tsv
from medpipe.core.records import read_intensity_profile, read_uncertainty
from medpipe.core.sidecar import read_sidecar
from medpipe.evaluate.metrics import read_metrics
from medpipe.evaluate.shift import SCORES, CaseFacts, read_reference, shift_reference, write_reference
from medpipe.evaluate.shift_table import flag_performance, flag_table, write_review_records

logger = logging.getLogger(__name__)


def _grid(reference_image: str | Path, subject: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Voxel size and field of view (mm) recorded in a converted image's sidecar."""
    geometry = read_sidecar(reference_image, subject=subject).get("geometry") or {}
    spacing, shape = geometry.get("spacing_mm"), geometry.get("shape")
    if not (isinstance(spacing, list) and isinstance(shape, list) and len(spacing) == len(shape) == 3):
        raise DataError(f"sidecar records no 3D geometry (got {geometry!r})", subject=subject, path=reference_image)
    return tuple(float(v) for v in spacing), tuple(float(s) * float(n) for s, n in zip(spacing, shape, strict=True))


def _volume_ml(mask: str | Path, subject: str) -> float:
    img = load_nifti(mask, subject=subject)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    return float(np.count_nonzero(np.asarray(img.dataobj))) * voxel_ml


def _labelled(metrics: str | Path | None, label: str | None = None) -> dict[str, tuple[float, float]]:
    """Subject -> (Dice, human volume in mL) of ``label`` (the whole structure; None: the first label of each
    subject) in ``evaluate/metrics.tsv``."""
    if metrics is None:
        return {}
    table = read_metrics(metrics)
    if label is not None:
        if label not in set(table["label"]):
            raise DataError(f"no rows of label {label!r} (found {sorted(set(table['label']))})", path=metrics)
        table = table[table["label"] == label]
    first = table.drop_duplicates("subject")
    return {str(r.subject): (float(r.dice), float(r.volume_human_ml)) for r in first.itertuples()}


def load_cases(
    subjects: Sequence[str],
    *,
    sets: Mapping[str, str],
    sites: Mapping[str, str],
    channels: Sequence[str],
    reference_images: Sequence[str | Path],
    normalised: Sequence[str | Path],
    auto_masks: Sequence[str | Path],
    uncertainty: Sequence[str | Path],
    metrics: str | Path | None = None,
    label: str | None = None,
) -> list[CaseFacts]:
    """Facts of ``subjects`` from their files (one per subject, in order; ``normalised`` subject-major); Dice
    and human volume from the ``label`` rows of ``metrics`` (the whole structure, like the predicted volume)."""
    n, k = len(subjects), len(channels)
    if not (len(reference_images) == len(auto_masks) == len(uncertainty) == n and len(normalised) == n * k):
        raise DataError(f"{n} subjects and {k} channels do not match the numbers of input files")
    scored = _labelled(metrics, label)
    cases = []
    for i, subject in enumerate(subjects):
        spacing, fov = _grid(reference_images[i], subject)
        profiles = {
            ch: read_intensity_profile(normalised[i * k + j], subject=subject).quantiles
            for j, ch in enumerate(channels)
        }
        dice, human = scored.get(subject, (None, None))
        cases.append(
            CaseFacts(
                subject=subject,
                set=str(sets.get(subject, "train")),
                site=str(sites.get(subject, "")),
                spacing_mm=spacing,  # type: ignore[arg-type]
                fov_mm=fov,  # type: ignore[arg-type]
                profiles=profiles,
                volume_ml=_volume_ml(auto_masks[i], subject),
                uncertainty=read_uncertainty(uncertainty[i]).score,
                dice=dice,
                human_volume_ml=human,
            )
        )
    return cases


def cases_from_job(params: Any, inputs: Any) -> list[CaseFacts]:
    """:func:`load_cases` from a shift rule's ``params`` (subjects, sets, sites, channels) and named ``input``
    (reference_images, normalised, auto_masks, uncertainty, optional metrics): the rules' adapters."""
    return load_cases(
        list(params.subjects),
        sets=params.sets,
        sites=params.sites,
        channels=list(params.channels),
        reference_images=list(inputs.reference_images),
        normalised=list(inputs.normalised),
        auto_masks=list(inputs.auto_masks),
        uncertainty=list(inputs.uncertainty),
        metrics=getattr(inputs, "metrics", None),
        label=getattr(params, "label", None),
    )


def run_reference(cases: Sequence[CaseFacts], settings: Mapping[str, Any], out: str | Path) -> Path:
    """Write the shift reference of the training ``cases`` (rule ``shift_reference``)."""
    reference = shift_reference(cases, settings)
    for name in SCORES:
        c = reference["calibration"][name]
        logger.info(
            "shift flag %s: threshold %s (cross-validation: %d good, %d failing cases, specificity %s, sensitivity %s)",
            name,
            c["threshold"],
            c["n_good"],
            c["n_fail"],
            c["specificity"],
            c["sensitivity"],
        )
    return write_reference(reference, out)


def run_flags(
    cases: Sequence[CaseFacts],
    reference_path: str | Path,
    *,
    out_table: str | Path,
    out_performance: str | Path,
    out_plot: str | Path,
    review_records: Mapping[str, str | Path],
) -> pd.DataFrame:
    """Flag every subject against the reference and write the tables, figure and review records."""
    reference = read_reference(reference_path)
    table = flag_table(cases, reference)
    order = [s for s in sheet_sets() if s in set(table["set"])]
    perf = flag_performance(table, order, float(reference["settings"]["dice_fail"]))
    write_tsv(table, out_table)
    write_tsv(perf, out_performance)
    save_flag_plot(table, reference, order, out_plot)
    write_review_records(table, review_records)
    flagged = table[table["any_flag"]]
    logger.info("shift flags: %d of %d subjects flagged (%s)", len(flagged), len(table), ", ".join(flagged["subject"]))
    return table


def save_flag_plot(table: pd.DataFrame, reference: Mapping[str, Any], sets: Sequence[str], out: str | Path) -> Path:
    """Dice per set and site, then one panel per calibrated score: score vs Dice, marked by set, threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(SCORES), figsize=(4.2 * (1 + len(SCORES)), 3.8), squeeze=False)
    _dice_panel(axes[0][0], table, sets)
    markers = dict(zip(sheet_sets(), ("o", "s", "^"), strict=False))
    for ax, name in zip(axes[0][1:], SCORES, strict=True):
        for set_name in sets:
            part = table[table["set"] == set_name]
            x = np.minimum(part[f"{name}_score"].astype(float).to_numpy(), 1e6)
            y = part["dice"].astype(float).fillna(-0.05).to_numpy()
            ax.scatter(x, y, marker=markers.get(set_name, "o"), label=set_name, alpha=0.8)
        threshold = reference["calibration"][name]["threshold"]
        if threshold is not None:
            ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="threshold")
        ax.axhline(float(reference["settings"]["dice_fail"]), color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel(f"{name} score" + ("" if threshold is not None else " (not calibrated)"))
        ax.set_ylabel("Dice (unlabelled at -0.05)")
        ax.set_ylim(-0.1, 1.02)
    axes[0][1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Internal vs external validation: Dice per set / site, domain-shift scores and thresholds")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def _dice_panel(ax: Any, table: pd.DataFrame, sets: Sequence[str]) -> None:
    """Dice of every labelled subject per set and site, flagged subjects in red."""
    groups = [(s, site) for s in sets for site in sorted(set(table.loc[table["set"] == s, "site"].astype(str)))]
    for i, (set_name, site) in enumerate(groups):
        part = table[(table["set"] == set_name) & (table["site"].astype(str) == site) & table["dice"].notna()]
        colours = ["tab:red" if f else "tab:blue" for f in part["any_flag"]]
        jitter = np.linspace(-0.15, 0.15, len(part)) if len(part) > 1 else np.zeros(len(part))
        ax.scatter(i + jitter, part["dice"].astype(float), c=colours, alpha=0.8)
    ax.set_xticks(range(len(groups)), [f"{s}\n{site}" if site else s for s, site in groups])
    ax.set_ylabel("Dice (red: flagged)")
    ax.set_ylim(-0.05, 1.02)
