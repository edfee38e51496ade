"""The demo cohort under ``segmentation.plan: auto``: what the plan chooses, the Dice it reaches, the wall time.

The run's config is ``config/config.yaml`` without the keys the plan decides (target spacing, normalisation,
architecture, filters, strides, squeeze-and-excitation, loss, patch, batch, epochs), plus ``plan: auto`` and a time
budget per fold model. It runs in its own folder (``--workdir``), so only that config is read. Steps: the demo
cohort (``medpipe demo-data``), the whole workflow, the report; the page lists the plan (``plan.tsv``), the Dice
per set beside the hand-typed demo's (``benchmarks/results/demo.md``: 0.876) and the wall times.

Usage (repository root):
    .venv/bin/python benchmarks/demo_plan_auto.py --workdir runs/demo_plan --budget-minutes 2.5 \
        --out benchmarks/results/demo_plan_auto.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
logger = logging.getLogger("demo_plan_auto")

#: Planned keys removed from the demo config (section -> keys).
PLANNED = {
    "preprocess": ["target_spacing_mm", "normalise"],
    "segmentation": ["model", "loss", "num_classes"],
}
PLANNED_TRAIN = ["epochs", "batch_size", "patch_size"]


def planned_config(budget_minutes: float) -> dict:
    """config/config.yaml without the planned keys, with ``plan: auto`` and the budget."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for section, keys in PLANNED.items():
        for key in keys:
            cfg[section].pop(key, None)
    for key in PLANNED_TRAIN:
        cfg["segmentation"]["train"].pop(key, None)
    cfg["segmentation"].update({"plan": "auto", "budget_minutes": budget_minutes})
    return cfg


def _sh(cmd: list[str], log: Path, cwd: Path | None = None) -> float:
    """Run ``cmd`` (output appended to ``log``); minutes taken."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True, env=env, cwd=cwd)
    return (time.perf_counter() - start) / 60.0


def _smk(workdir: Path, config: Path, *args: str) -> list[str]:
    return [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
            str(config), "--workflow-profile", str(REPO / "profiles/default"), *args]  # fmt: skip


def _table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(str(v).replace("|", "/") for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo_plan"))
    parser.add_argument("--budget-minutes", type=float, default=2.5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_plan_auto.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(planned_config(args.budget_minutes), sort_keys=False))
    log = work / "benchmark.log"
    demo = [str(BIN / "medpipe"), "demo-data", "--out", "resources/demo", "--config", str(REPO / "config/config.yaml")]
    t_data = _sh(demo, log, cwd=work)
    t_run = _sh(_smk(work, config, "--cores", "2"), log)
    t_report = _sh(_smk(work, config, "--cores", "1", "--report", "results/report.html"), log)
    logger.info("data %.1f min, run %.1f min, report %.1f min", t_data, t_run, t_report)
    plan = pd.read_csv(work / "results/plan/plan.tsv", sep="\t", dtype=str)
    summary = pd.read_csv(work / "results/evaluate/summary.tsv", sep="\t")
    dice = summary[summary["metric"] == "dice"][["set", "n", "mean", "median", "min", "ci95_low", "ci95_high"]]
    train_min = [
        float(pd.read_csv(p, sep="\t")["s"].iloc[0]) / 60 for p in sorted(work.glob("logs/benchmarks/train/*.tsv"))
    ]
    lines = [
        "# Demo cohort under `segmentation.plan: auto`",
        "",
        f"Command: `.venv/bin/python benchmarks/demo_plan_auto.py --workdir {args.workdir} --budget-minutes "
        f"{args.budget_minutes:g} --out {args.out}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, no GPU; {time.strftime('%Y-%m-%d')}.",
        "Config: config/config.yaml without the planned keys, `plan: auto`, "
        f"`budget_minutes: {args.budget_minutes:g}` per fold model.",
        "",
        "## Wall time",
        f"demo data {t_data:.1f} min, workflow {t_run:.1f} min, report {t_report:.1f} min: "
        f"**{t_data + t_run + t_report:.1f} min** (hand-typed demo, `make demo`: 8.5 min, "
        "benchmarks/results/demo.md); "
        "train jobs " + ", ".join(f"{m:.1f}" for m in train_min) + " min.",
        "",
        "## Dice (cross-validated; hand-typed demo: mean 0.876)",
        _table(dice.round(3)),
        "",
        "## The plan (results/plan/plan.tsv)",
        _table(plan),
        "",
    ]
    args.out.write_text("\n".join(lines))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
