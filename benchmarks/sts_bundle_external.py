"""Train once, segment elsewhere: a bundle trained on STS_001..030 segments STS_031..040 declared external.

1. Run A (``WORKDIR/train``): the IBSI soft-tissue-sarcoma patients from ../shared as NIfTI, STS_001..030
   ``set: train`` (k-fold cross-validation), STS_031..040 ``set: external`` (never trained on, segmented by the
   ensemble of every fold in the same run). Targets: the bundle, the evaluation summary, the shift flags.
2. ``medpipe model export`` of run A, copied to a fresh folder (``WORKDIR/elsewhere/bundle``) and verified.
3. Run B (``WORKDIR/external``): only STS_031..040, ``set: external``, ``segmentation.bundle`` = that copy; the
   whole workflow and its report.
4. The probability maps and masks of STS_031..040 of run B are compared with run A's, byte for byte and as
   arrays; the page lists the external Dice per run and the shift flags.

The schedule is shortened (``--folds``, ``--epochs``) for a CPU: the check is about reuse, not about Dice. On the
project's 2-core machine, measured while a test suite shared the cores, the preprocessing of the 40 patients
(conversion, N4, deepbet, normalisation) took about 50 min and one epoch of one fold about 4.3 min (two folds train
side by side), so 30 epochs would need more than 2 h of training alone; the default is 5 epochs.

Usage (repository root):
    .venv/bin/python benchmarks/sts_bundle_external.py --workdir runs/sts_bundle \
        --out benchmarks/results/sts_bundle_external.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _sh(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        subprocess.run(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=True,
            env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"),
        )
    return (time.perf_counter() - start) / 60.0


def _smk(workdir: Path, config: Path, *args: str) -> list[str]:
    return [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--workflow-profile",
        str(REPO / "profiles/default"),
        *args,
    ]


def _sheet(root: Path, out: Path, log: Path, *, external_only: bool) -> list[str]:
    _sh(
        [
            str(BIN / "medpipe"),
            "sheet",
            str(root),
            "--label",
            "MR_T1_mask.nii.gz",
            "--require",
            "MR_T1_image.nii.gz",
            "--out",
            str(out),
        ],
        log,
    )
    sheet = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    number = sheet["subject"].str.extract(r"(\d+)$")[0].astype(int)
    sheet["set"] = np.where(number <= 30, "train", "external")
    sheet["site"] = "ibsi-sts"
    if external_only:
        sheet = sheet[sheet["set"] == "external"]
    sheet.to_csv(out, sep="\t", index=False)
    return sorted(sheet.loc[sheet["set"] == "external", "subject"])


def _config(args: argparse.Namespace, out: Path, bundle: Path | None) -> Path:
    cfg = yaml.safe_load((REPO / "config/ibsi_sts.yaml").read_text())
    cfg["subjects"] = "subjects.tsv"
    cfg["segmentation"]["folds"] = args.folds
    cfg["segmentation"]["train"]["epochs"] = args.epochs
    cfg["radiomics"]["perturbations"] = []
    if bundle is not None:
        cfg["segmentation"]["bundle"] = str(bundle)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def _compare(a: Path, b: Path, subjects: list[str]) -> list[str]:
    rows = ["| subject | probability map bytes | probability array | auto mask bytes |", "|---|---|---|---|"]
    for s in subjects:
        prob = f"predict/sub-{s}/sub-{s}_prob.nii.gz"
        mask = f"postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz"
        same_bytes = (a / prob).read_bytes() == (b / prob).read_bytes()
        same_array = np.array_equal(np.asarray(nib.load(a / prob).dataobj), np.asarray(nib.load(b / prob).dataobj))
        same_mask = (a / mask).read_bytes() == (b / mask).read_bytes()
        rows.append(
            f"| {s} | {'identical' if same_bytes else 'DIFFER'} | {'equal' if same_array else 'DIFFER'} | "
            f"{'identical' if same_mask else 'DIFFER'} |"
        )
    return rows


def _dice(results: Path) -> list[str]:
    s = pd.read_csv(results / "evaluate/summary.tsv", sep="\t")
    s = s[s["metric"] == "dice"]
    return [
        f"| {r.set} | {r.n} | {r.mean:.3f} ({r.ci95_low:.3f}–{r.ci95_high:.3f}) | {r.median:.3f} |"
        for r in s.itertuples()
    ]


def _flags(results: Path) -> list[str]:
    f = pd.read_csv(results / "evaluate/shift_flags.tsv", sep="\t", dtype={"subject": str}, keep_default_na=False)
    rows = [
        "| subject | set | Dice | intensity | uncertainty | volume | grid | reasons |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in f.itertuples():
        if r.set == "external":
            rows.append(
                f"| {r.subject} | {r.set} | {float(r.dice):.3f} | {r.intensity_flag} | {r.uncertainty_flag} | "
                f"{r.volume_flag} | {r.grid_flag} | {r.reasons} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs/sts_bundle")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cores", default="2")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    root = args.shared / "data/ibsi_sts/nifti"
    wd = args.workdir.resolve()
    train, ext = wd / "train", wd / "external"
    for d in (train, ext):
        d.mkdir(parents=True, exist_ok=True)
    log = wd / "benchmark.log"
    external = _sheet(root, train / "subjects.tsv", log, external_only=False)
    cfg_a = _config(args, wd / "train.yaml", None)
    targets = ["results/bundle", "results/evaluate/summary.tsv", "results/evaluate/shift_flags.tsv"]
    minutes_a = _sh(_smk(train, cfg_a, "--cores", args.cores, *targets), log)
    export = wd / "export/bundle"
    shutil.rmtree(export.parent, ignore_errors=True)
    _sh([str(BIN / "medpipe"), "model", "export", str(train / "results"), str(export)], log)
    elsewhere = wd / "elsewhere/bundle"
    shutil.rmtree(elsewhere.parent, ignore_errors=True)
    shutil.copytree(export, elsewhere)
    _sh([str(BIN / "medpipe"), "model", "verify", str(elsewhere)], log)
    _sheet(root, ext / "subjects.tsv", log, external_only=True)
    cfg_b = _config(args, wd / "external.yaml", elsewhere)
    minutes_b = _sh(_smk(ext, cfg_b, "--cores", args.cores), log)
    _sh(_smk(ext, cfg_b, "--cores", "1", "--report", "results/report.html"), log)
    lines = [
        "# STS: a bundle trained on STS_001..030 segments STS_031..040 as an external cohort",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, CPU only. Command: `.venv/bin/python "
        f"benchmarks/sts_bundle_external.py --folds {args.folds} --epochs {args.epochs}` (config/ibsi_sts.yaml "
        f"with {args.folds} folds, {args.epochs} epochs, no perturbations). Run A (train + in-run external "
        f"ensemble): {minutes_a:.1f} min; run B (bundle copy, inference only, whole workflow): {minutes_b:.1f} min.",
        "",
        "## Run B (bundle from a copied folder) vs run A's in-run ensemble on the external patients",
        *_compare(train / "results", ext / "results", external),
        "",
        "## Dice per set",
        "| run / set | n | Dice mean (95 % CI) | median |",
        "|---|---|---|---|",
        *[f"| A {row[2:]}" for row in _dice(train / "results")],
        *[f"| B {row[2:]}" for row in _dice(ext / "results")],
        "",
        "## Shift flags of the external patients (run B, thresholds from the bundle)",
        *_flags(ext / "results"),
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
