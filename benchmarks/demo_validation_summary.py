"""Summarise a finished `make demo` run: internal vs external validation, shift flags, outcome models.

Reads only the run's own outputs and the demo's ground truth (resources/demo/truth/sites.tsv: which subjects
were acquired on the shifted scanner): the evaluation summary per set and site, the domain-shift flags and
their calibration, the outcome models' comparison per set and the most frequently selected features with
their Spearman rho against the outcome's driver (the necrotic fraction, truth/outcomes.tsv). Nothing is
recomputed, so the page shows exactly what the report shows.

Usage (from the repository root, after `make demo`):
    .venv/bin/python benchmarks/demo_validation_summary.py --run . --out benchmarks/results/demo_validation.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import pandas as pd
from scipy import stats


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str}, keep_default_na=False, na_values=["NA", "NaN", ""])


def _dice_rows(res: Path) -> list[str]:
    summary = _tsv(res / "evaluate/summary.tsv")
    dice = summary[summary["metric"] == "dice"]
    rows = ["| set | n | Dice mean (95 % CI) | median |", "|---|---|---|---|"]
    for r in dice.itertuples():
        rows.append(f"| {r.set} | {r.n} | {r.mean:.3f} ({r.ci95_low:.3f}–{r.ci95_high:.3f}) | {r.median:.3f} |")
    return rows


def _flag_rows(res: Path, truth: pd.DataFrame) -> list[str]:
    flags = _tsv(res / "evaluate/shift_flags.tsv").merge(truth[["subject", "gamma"]], on="subject")
    flags["shifted"] = flags["gamma"].astype(float) != 1.0
    rows = [
        "| set | shifted scanner | subjects | intensity flag | uncertainty flag | volume flag | grid flag | any |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (set_name, shifted), part in flags.groupby(["set", "shifted"], sort=False):
        counts = [int(part[f"{f}_flag"].astype(str).eq("True").sum()) for f in ("intensity", "uncertainty", "volume")]
        grid = int(part["grid_flag"].astype(str).eq("True").sum())
        anyf = int(part["any_flag"].astype(str).eq("True").sum())
        rows.append(
            f"| {set_name} | {'yes' if shifted else 'no'} | {len(part)} | "
            + " | ".join(map(str, counts))
            + f" | {grid} | {anyf} |"
        )
    return rows


def _calibration_rows(res: Path) -> list[str]:
    ref = json.loads((res / "evaluate/shift_reference.json").read_text())
    rows = [
        "| score | threshold | CV good / failing cases | CV specificity | CV sensitivity |",
        "|---|---|---|---|---|",
    ]
    for name, c in ref["calibration"].items():
        rows.append(
            f"| {name} | {c['threshold']} | {c['n_good']} / {c['n_fail']} | {c['specificity']} | {c['sensitivity']} |"
        )
    return rows


def _signature_rows(res: Path, run: Path) -> list[str]:
    comp = _tsv(res / "signature/comparison.tsv")
    rows = ["| set | subjects | human vs auto: AUC (95 % CI), DeLong P |", "|---|---|---|"]
    rows += [f"| {r.set} | {r.n_subjects} | {r.text} |" for r in comp.itertuples()]
    truth = _tsv(run / "resources/demo/truth/outcomes.tsv")
    features = _tsv(res / "radiomics/features.tsv")
    rows += ["", "| source | feature | selection frequency | Spearman rho vs necrotic fraction |", "|---|---|---|---|"]
    driver = next(c for c in truth.columns if "necrotic" in c)
    for source in ("human", "auto"):
        sel = _tsv(res / f"signature/source-{source}/selection.tsv").sort_values("selection_frequency", ascending=False)
        part = features[features["source"] == source]
        for r in sel.head(5).itertuples():
            values = part[part["feature"] == r.feature][["subject", "value"]].merge(truth, on="subject")
            rho = stats.spearmanr(values["value"], values[driver]).statistic if len(values) > 2 else float("nan")
            rows.append(f"| {source} | `{r.feature}` | {r.selection_frequency:.2f} | {rho:+.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("."), help="working directory of the demo run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    res = args.run / "results"
    truth = _tsv(args.run / "resources/demo/truth/sites.tsv")
    lines = [
        "# Demo: internal vs external validation, domain-shift flags, outcome models",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; run: `make demo`.",
        "",
        "## Dice per set (results/evaluate/summary.tsv)",
        *_dice_rows(res),
        "",
        "## Domain-shift flags per set and scanner (results/evaluate/shift_flags.tsv, truth/sites.tsv)",
        *_flag_rows(res, truth),
        "",
        "## Calibration on the cross-validated cases (results/evaluate/shift_reference.json)",
        *_calibration_rows(res),
        "",
        "## Outcome models (results/signature/comparison.tsv, selection.tsv)",
        *_signature_rows(res, args.run),
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
