"""Summarise a finished `make sts` run (config/ibsi_sts.yaml) as a Markdown results page.

Reads only the run's own outputs: the cross-validated segmentation metrics (results/evaluate), the
human-vs-automatic retention table (results/stats/retention_by_class.tsv), the mask-perturbation
retention (results/stats/robustness_by_class.tsv) and the Snakemake log's first and last timestamps.
Nothing is recomputed here, so the page shows exactly what the pipeline's report shows.

Usage (from the repository root, after `make sts`):
    .venv/bin/python benchmarks/sts_pipeline_summary.py --run runs/ibsi_sts \
        --out benchmarks/results/sts_pipeline.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def _wall_minutes(run: Path) -> tuple[float, int]:
    """Minutes from the first to the last job timestamp over every Snakemake log of the run."""
    stamps = []
    logs = sorted((run / ".snakemake" / "log").glob("*.snakemake.log"))
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = _STAMP.match(line.strip())
            if match:
                stamps.append(datetime.strptime(re.sub(" +", " ", match.group(1)), "%a %b %d %H:%M:%S %Y"))
    if not stamps:
        return float("nan"), len(logs)
    return (max(stamps) - min(stamps)).total_seconds() / 60.0, len(logs)


def _retention_wide(by_class: pd.DataFrame) -> pd.DataFrame:
    wide = by_class.pivot(index="class", columns="perturbation", values="percent_reproducible")
    order = [c for c in ("shape", "first-order", "texture", "wavelet", "LoG", "all") if c in wide.index]
    columns = [c for c in by_class["perturbation"].drop_duplicates() if c in wide.columns]
    n = by_class.drop_duplicates("class").set_index("class")["n_evaluable"]
    return wide.loc[order, columns].assign(n_evaluable=n.loc[order]).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/ibsi_sts"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    res = args.run / "results"
    metrics = pd.read_csv(res / "evaluate/metrics.tsv", sep="\t", dtype={"subject": str})
    summary = pd.read_csv(res / "evaluate/summary.tsv", sep="\t")
    folds = json.loads((res / "split/folds.json").read_text())["assignment"]
    metrics["fold"] = metrics["subject"].map(folds)
    retention = pd.read_csv(res / "stats/retention_by_class.tsv", sep="\t")
    robustness = pd.read_csv(res / "stats/robustness_by_class.tsv", sep="\t")
    per_feature = pd.read_csv(res / "stats/reproducibility.tsv", sep="\t")
    robust = pd.read_csv(res / "stats/robustness.tsv", sep="\t")
    minutes, n_logs = _wall_minutes(args.run)
    per_fold = metrics.groupby("fold")["dice"].agg(["count", "mean", "median", "min"]).reset_index()
    per_fold[["fold", "count"]] = per_fold[["fold", "count"]].astype(str)
    metrics["fold"] = metrics["fold"].astype(str)
    worst = per_feature[(per_feature["status"] == "ok") & (per_feature["image_type"] == "original")]
    worst = worst.nsmallest(10, "ccc")[["feature", "ccc", "ccc_ci_low", "ccc_ci_high", "icc31", "icc21"]]
    keep = int(robust["robust"].sum())
    lines = [
        "# IBSI soft-tissue sarcoma through the whole pipeline (`make sts`)",
        "",
        f"Run: `make sts` (config `config/ibsi_sts.yaml`), {metrics['subject'].nunique()} patients read as NIfTI "
        f"from ../shared/data/ibsi_sts/nifti; {len(set(folds.values()))}-fold CV, every patient segmented by "
        "the model that never saw it. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only. Wall time (first to last job over the run's "
        f"{n_logs} Snakemake logs, dry runs and report included): {minutes:.1f} min.",
        "Numbers below are copied from the run's own tables (`results/evaluate`, `results/stats`), which the "
        "run's report (`runs/ibsi_sts/results/report.html`, section 7. Reproducibility) shows.",
        "",
        "## Segmentation (native MR grid, after postprocessing)",
        "",
        "Dice etc. over all patients (bootstrap 95 % CI from the pipeline), then Dice per fold:",
        "",
        summary[summary["metric"].isin(["dice", "jaccard", "hd95_mm", "msd_mm"])]
        .drop(columns=["label"])
        .to_markdown(index=False, floatfmt=".3f"),
        "",
        per_fold.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Radiomics reproducibility, human vs automatic masks (CCC >= 0.80)",
        "",
        retention.to_markdown(index=False, floatfmt=".3g"),
        "",
        "Least reproducible original-image features:",
        "",
        worst.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Robustness to perturbations of the human mask / image (% of features with CCC >= 0.80)",
        "",
        "Columns: one-voxel erosion, dilation, shift by one voxel per axis, image noise, and `all` "
        "(reproducible under every perturbation).",
        "",
        _retention_wide(robustness).to_markdown(index=False, floatfmt=".1f"),
        "",
        f"Features robust to every perturbation (`robust` in results/stats/robustness.tsv): {keep} of {len(robust)}.",
        "",
        "## Per patient",
        "",
        metrics[["subject", "fold", "dice", "hd95_mm", "volume_human_ml", "volume_auto_ml"]]
        .sort_values("subject")
        .to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
