"""Summarise the outcome models of a finished `make demo` run as a Markdown results page.

Reads the run's own outputs (results/signature: comparison, per-source model records and selection tables;
results/radiomics/features.tsv) and the generator's truth (resources/demo/truth/outcomes.tsv: the simulated
outcome and the necrotic fraction that drives it). For the most frequently selected features it adds their
Spearman correlation with the necrotic fraction over the modelled subjects, on the source's own masks: that
is how a reader can check that the models found the outcome's known driver.

Usage (from the repository root, after `make demo`):
    .venv/bin/python benchmarks/signature_demo.py --run . --out benchmarks/results/signature_demo.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from medpipe.core.io import read_feature_table


def _top_features(run: Path, source: str, truth: pd.DataFrame, features: pd.DataFrame, n: int) -> list[str]:
    selection = pd.read_csv(run / f"results/signature/source-{source}/selection.tsv", sep="\t")
    top = selection.sort_values(["selection_frequency", "feature"], ascending=[False, True]).head(n)
    rows = features[features["source"] == source].pivot_table(index="subject", columns="feature", values="value")
    lines = []
    for _, sel in top.iterrows():
        values = rows.loc[truth.index, sel["feature"]]
        rho = spearmanr(values, truth["necrotic_fraction"]).statistic
        lines.append(f"| {source} | `{sel['feature']}` | {sel['selection_frequency']:.2f} | {rho:+.2f} |")
    return lines


def main() -> None:
    """Write the Markdown page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    run = args.run
    truth = pd.read_csv(run / "resources/demo/truth/outcomes.tsv", sep="\t", dtype={"subject": str})
    truth = truth.set_index("subject")
    features = read_feature_table(run / "results/radiomics/features.tsv")
    comparison = pd.read_csv(run / "results/signature/comparison.tsv", sep="\t")
    out = ["# Demo outcome models: human-mask vs automatic-mask features", ""]
    out += [
        f"Outcome: simulated response driven by the necrotic fraction (`medpipe.demo.outcome`), "
        f"{int(truth['response'].sum())} events / {len(truth)} subjects.",
        "",
    ]
    out += ["| sources | subjects | AUC a (CI) vs AUC b (CI), DeLong P |", "|---|---|---|"]
    for _, row in comparison.iterrows():
        out.append(f"| {row['source_a']} vs {row['source_b']} | {row['n_subjects']} | {row['text']} |")
    out += ["", "| source | CV AUC | sensitivity | specificity | candidate features |", "|---|---|---|---|---|"]
    sources = sorted({*comparison["source_a"], *comparison["source_b"]})
    for source in sources:
        record = json.loads((run / f"results/signature/source-{source}/model.json").read_text())
        cv = record["cv"]
        out.append(
            f"| {source} | {cv['auc']:.3f} ({cv['auc_ci_low']:.3f}-{cv['auc_ci_high']:.3f}) | "
            f"{cv['sensitivity']:.2f} | {cv['specificity']:.2f} | {record['n_candidate_features']} |"
        )
    out += [
        "",
        f"Top {args.top} features by selection frequency over the CV fits, with their Spearman rho against "
        "the necrotic fraction (the outcome's driver):",
        "",
    ]
    out += ["| source | feature | selection frequency | rho vs necrotic fraction |", "|---|---|---|---|"]
    for source in sources:
        out += _top_features(run, source, truth, features, args.top)
    args.out.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
