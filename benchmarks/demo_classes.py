"""Summarise the classes of a finished `make demo` run: rim, core and whole lesion, DICOM-SEG, radiomics regions.

The demo study (config/demo.yaml) declares the lesion's enhancing rim (1) and necrotic core (2). This page reads
the run's own tables for the Dice per class and per region (the whole lesion, label.name, is the union of both) by
set, and per subject; reads every exported DICOM-SEG back with highdicom and scores each segment against the NIfTI
mask it was made from (placed in the world with highdicom's affine, mapped onto the NIfTI grid with nibabel's:
independent of the exporter's slice mapping); counts the radiomics rows per region and mask source; and gives the
human-vs-automatic retention (CCC >= stats.ccc_cutoff) per region.

Usage (from the repository root, after `make demo`):
    .venv/bin/python benchmarks/demo_classes.py --run . --out benchmarks/results/demo_classes.md
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str}, keep_default_na=False, na_values=["NA", "NaN", ""])


def readback_dice(seg_path: Path, mask: nib.Nifti1Image, segment: int, value: int) -> tuple[float, int]:
    """Dice of one DICOM-SEG segment (highdicom, world coordinates) against ``mask == value``; segment voxels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.segread(seg_path)
        vol = seg.get_volume(segment_numbers=[segment], combine_segments=True)
    idx = np.argwhere(vol.array > 0)
    ras = (np.c_[idx, np.ones(len(idx))] @ vol.affine.T) * np.array([-1.0, -1.0, 1.0, 1.0])
    ijk = np.rint((ras @ np.linalg.inv(mask.affine).T)[:, :3]).astype(int)
    readback = np.zeros(mask.shape, bool)
    readback[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    truth = np.asarray(mask.dataobj) == value
    total = int(readback.sum() + truth.sum())
    return (1.0 if total == 0 else 2.0 * np.count_nonzero(readback & truth) / total), int(readback.sum())


def _dice_by_set(res: Path) -> list[str]:
    summary = _tsv(res / "evaluate/summary.tsv")
    dice = summary[summary["metric"] == "dice"]
    rows = ["| set | region | n | Dice mean (95 % CI) | median | min |", "|---|---|---|---|---|---|"]
    for r in dice.itertuples():
        rows.append(
            f"| {r.set} | {r.label} | {r.n} | {r.mean:.3f} ({r.ci95_low:.3f}–{r.ci95_high:.3f}) | {r.median:.3f} "
            f"| {r.min:.3f} |"
        )
    return rows


def _dice_by_subject(res: Path) -> tuple[list[str], list[str]]:
    metrics = _tsv(res / "evaluate/metrics.tsv")
    wide = metrics.pivot_table(index="subject", columns="label", values="dice", sort=False)
    labels = list(dict.fromkeys(metrics["label"]))
    rows = ["| subject | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    rows += [f"| {s} | " + " | ".join(f"{wide.loc[s, lab]:.3f}" for lab in labels) + " |" for s in wide.index]
    return rows, labels


def _seg_rows(res: Path) -> list[str]:
    rows = ["| subject | segment | label | voxels | read-back Dice |", "|---|---|---|---|---|"]
    for seg_path in sorted(res.glob("postprocess/sub-*/sub-*_desc-auto_mask.dcm")):
        subject = seg_path.parent.name.removeprefix("sub-")
        mask = nib.load(seg_path.with_suffix(".nii.gz"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            segments = [(int(s.SegmentNumber), str(s.SegmentLabel)) for s in hd.seg.segread(seg_path).SegmentSequence]
        for number, label in segments:
            dice, n = readback_dice(seg_path, mask, number, number)
            rows.append(f"| {subject} | {number} | {label} | {n} | {dice:.6f} |")
    return rows


def _radiomics_rows(res: Path) -> list[str]:
    features = pd.read_csv(res / "radiomics/features.tsv", sep="\t", dtype={"subject": str}, low_memory=False)
    counts = features.groupby(["region", "source"]).agg(subjects=("subject", "nunique"), rows=("value", "size"))
    rows = ["| region | mask source | subjects | feature rows |", "|---|---|---|---|"]
    rows += [f"| {region} | {source} | {r.subjects} | {r.rows} |" for (region, source), r in counts.iterrows()]
    return rows


#: Feature classes of the retention tables, in report order.
RETENTION_CLASSES = ("shape", "first-order", "texture", "wavelet", "LoG", "all")


def _retention_table(table: pd.DataFrame) -> list[str]:
    table = table[table["class"].isin(RETENTION_CLASSES)]
    wide = table.pivot_table(index="region", columns="class", values="percent_reproducible", sort=False)
    classes = [c for c in RETENTION_CLASSES if c in wide.columns]
    rows = ["| region | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    rows += [f"| {r} | " + " | ".join(f"{wide.loc[r, c]:.1f} %" for c in classes) + " |" for r in wide.index]
    return rows


def _retention_rows(res: Path) -> list[str]:
    by_set = _tsv(res / "stats/retention_by_set.tsv")
    rows = ["All subjects with both sources (results/stats/retention_by_class.tsv):", ""]
    rows += _retention_table(_tsv(res / "stats/retention_by_class.tsv"))
    for set_name in ("train", "external"):
        part = by_set[(by_set["set"] == set_name) & (by_set["site"].astype(str) == "all")]
        if len(part):
            n = int(part["n_subjects"].iloc[0])
            rows += ["", f"Set {set_name} ({n} subjects; results/stats/retention_by_set.tsv):", ""]
            rows += _retention_table(part)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("."), help="the working directory of the finished run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    res = args.run / "results"
    by_subject, labels = _dice_by_subject(res)
    lines = [
        "# The demo's classes: rim, core and whole lesion (`make demo`, config/demo.yaml)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}. "
        f"Rows per subject: {', '.join(labels)} (the whole lesion is the union of rim and core).",
        "",
        "## Dice per set and region (results/evaluate/summary.tsv)",
        *_dice_by_set(res),
        "",
        "## Dice per subject (results/evaluate/metrics.tsv)",
        *by_subject,
        "",
        "## DICOM-SEG: one segment per class, read back with highdicom",
        *_seg_rows(res),
        "",
        "## Radiomics rows per region and mask source (results/radiomics/features.tsv)",
        *_radiomics_rows(res),
        "",
        "## Human vs automatic: features with CCC >= cutoff per region",
        *_retention_rows(res),
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
