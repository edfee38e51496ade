"""Run the signature stage's two jobs on the features of a finished demo run (no re-segmentation).

For a run made before the demo cohort had an outcome: writes the outcome table with the generator's own
function (:func:`medpipe.demo.outcome.write_outcomes`, from the run's truth lesion_parts), then calls the
functions the `signature` and `signature_compare` rules call, with the `signature:` section of
config/config.yaml. The layout written under --out is the one benchmarks/signature_demo.py reads.

Usage (from the repository root):
    .venv/bin/python benchmarks/signature_on_run.py --run ../demo-run --out ../sigdemo
    .venv/bin/python benchmarks/signature_demo.py --run ../sigdemo --out benchmarks/results/signature_demo.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from medpipe.core.config import with_defaults
from medpipe.demo.outcome import write_outcomes
from medpipe.signature.stage import comparison_report, signature_report


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target.resolve())


def main() -> None:
    """Write outcomes, per-source models and the comparison under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    settings = with_defaults(cfg["signature"], "signature")
    subjects = sorted(pd.read_csv(args.run / "resources/demo/subjects.tsv", sep="\t", dtype=str)["subject"])
    truth = args.out / "resources/demo/truth"
    for s in subjects:
        _link(args.run / "resources/demo/truth" / s / "lesion_parts.nii.gz", truth / s / "lesion_parts.nii.gz")
    outcomes = write_outcomes(truth, subjects, int(cfg["demo"]["seed"]))
    features = args.out / "results/radiomics/features.tsv"
    _link(args.run / "results/radiomics/features.tsv", features)
    res = args.out / "results/signature"
    oof = {}
    for source in settings["sources"]:
        d = res / f"source-{source}"
        d.mkdir(parents=True, exist_ok=True)
        signature_report(features, outcomes, d / "oof.tsv", d / "selection.tsv", d / "model.json",
                         source=source, settings=settings, labelled=subjects, seed=int(cfg["seed"]))  # fmt: skip
        oof[source] = d / "oof.tsv"
    model = settings["model"]
    comparison_report(oof, res / "comparison.tsv", res / "roc.png", res / "calibration.png",
                      pairs=settings["compare"], level=model["level"], ci=model["ci"])  # fmt: skip


if __name__ == "__main__":
    main()
