"""Benchmark: a smart-labeling campaign on the 38 IBSI soft-tissue-sarcoma patients, in simulation mode.

The clinicians' GTV masks act as the corrections. Held out: the 8 test patients of fold 0 of the committed split
(``config/splits/ibsi_sts_5fold.json``); candidates: the other 30. Round 0 trains from scratch on 6 patients
(a seeded draw); each later round selects 6 more from the unlabelled pool (``uncertainty``: highest mean
predictive entropy, :func:`medpipe.labeling.select.select_batch`; or ``random``, seeded), "corrects" them
(:func:`medpipe.labeling.ingest.accept_correction`: share of voxels a corrector changes, on the training grid)
and fine-tunes the previous round's model (:func:`medpipe.labeling.campaign.round_training_settings`) until 30
are labelled. Per round: Dice of the round's model on the held-out patients (native MR grid, thresholded
foreground probability, as ``benchmarks/seg_sts.py``), Dice of the raw prediction vs the correction on the batch,
share of voxels changed, training seconds. ``--scratch`` also retrains every uncertainty round from scratch
(round-0 schedule) for the fine-tune vs from-scratch comparison. Preprocessing as ``seg_sts.py`` (MR T1
resampled to ``--spacing``, z-scored).

Example (reduced CPU schedule, 2 cores)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/labeling_sts.py --epochs0 16 --epochs-ft 4 \
        --out benchmarks/results/labeling_sts.md
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medpipe.core.config import with_defaults
from medpipe.core.overlap import dice_score
from medpipe.core.sidecar import read_sidecar
from medpipe.labeling.campaign import round_training_settings
from medpipe.labeling.ingest import accept_correction
from medpipe.labeling.select import select_batch
from medpipe.segment.infer import predict_case
from medpipe.segment.split import read_folds
from medpipe.segment.train import train_fold

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("seg_sts", REPO / "benchmarks" / "seg_sts.py")
seg_sts = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(seg_sts)  # type: ignore[union-attr]
logger = logging.getLogger("labeling_sts")


def _train(work: Path, name: str, subjects: list[str], prepared: dict, settings: dict, seed: int, threads: int):
    t0 = time.monotonic()
    model = train_fold(
        [prepared[p][0] for p in subjects],
        [prepared[p][1] for p in subjects],
        work / name / "model.pt",
        work / name / "learning_curve.tsv",
        work / name / "learning_curve.png",
        subjects=subjects,
        fold=0,
        settings=settings,
        seed=seed,
        deterministic=False,
        threads=threads,
    )
    return model, time.monotonic() - t0


def _predict(model: Path, patient: str, prepared: dict, out: Path, settings: dict, threads: int) -> Path:
    predict_case(
        prepared[patient][0],
        str(model),
        out / "prob.nii.gz",
        out / "pred.nii.gz",
        out / "unc.json",
        subject=patient,
        settings=settings,
        threads=threads,
    )
    return out


def _heldout_dice(model: Path, held: list[str], prepared: dict, work: Path, settings: dict, args) -> float:
    dices = []
    for p in held:
        out = _predict(model, p, prepared, work / p, settings, args.threads)
        native = nib.load(Path(args.data) / p / "MR_T1_image.nii.gz")
        truth = np.asarray(nib.load(Path(args.data) / p / "MR_T1_mask.nii.gz").dataobj) > 0
        dices.append(dice_score(seg_sts.to_native(out / "prob.nii.gz", native), truth))
    return float(np.mean(dices))


def _select(model, pool, prepared, work: Path, settings, strategy, r, args) -> tuple[list[str], float, float]:
    """Predict the pool, select the batch, 'correct' it: (batch, mean Dice raw vs correction, changed share)."""
    outs = {p: _predict(model, p, prepared, work / "pool" / p, settings, args.threads) for p in pool}
    batch = select_batch(
        [outs[p] / "unc.json" for p in pool],
        work / "selection.tsv",
        pool=pool,
        strategy=strategy,
        batch_size=args.batch,
        seed=args.seed,
        round_index=r,
    )
    dices, shares = [], []
    for p in batch:
        accepted = work / "accepted" / f"sub-{p}_mask.nii.gz"
        accept_correction(
            prepared[p][1],
            prepared[p][0][0],
            outs[p] / "pred.nii.gz",
            accepted,
            subject=p,
            round_index=r,
            batch=batch,
            n_classes=2,
        )
        shares.append(float(read_sidecar(accepted)["changed_share"]))
        pred = np.asarray(nib.load(outs[p] / "pred.nii.gz").dataobj) > 0
        dices.append(dice_score(pred, np.asarray(nib.load(prepared[p][1]).dataobj) > 0))
    return batch, float(np.mean(dices)), float(np.mean(shares))


def campaign(strategy: str, args, split: dict, settings: dict, prepared: dict, first: tuple) -> list[dict[str, Any]]:
    """Rounds 0..n of one strategy (round 0's model is shared: ``first`` = (model, seconds))."""
    work = Path(args.work) / strategy
    held, labelled, pool = args.held, list(args.initial), [p for p in args.candidates if p not in args.initial]
    lab = with_defaults({"rounds": 1, "fine_tune": {"epochs": args.epochs_ft}}, "labeling")
    model, seconds, rows = first[0], first[1], []
    for r in range(args.rounds):
        rdir = work / f"round-{r}"
        if r > 0:
            model, seconds = _train(
                rdir,
                "model",
                labelled,
                prepared,
                round_training_settings(settings, lab["fine_tune"], str(model)),
                args.seed,
                args.threads,
            )
        row = {
            "strategy": strategy,
            "round": r,
            "labelled": len(labelled),
            "train_s": seconds,
            "heldout_dice": _heldout_dice(model, held, prepared, rdir / "heldout", settings, args),
        }
        if r < args.rounds - 1:
            batch, row["batch_dice"], row["changed_share"] = _select(
                model, pool, prepared, rdir, settings, strategy, r, args
            )
            row["batch"] = ",".join(batch)
            labelled += batch
            pool = [p for p in pool if p not in batch]
        rows.append(row)
        logger.info("%s round %d: %s", strategy, r, row)
    return rows


def scratch_rounds(args, settings: dict, prepared: dict, batches: list[list[str]]) -> list[dict[str, Any]]:
    """The uncertainty campaign's labelled sets, each retrained from scratch (round-0 schedule)."""
    rows, labelled = [], list(args.initial)
    for r, batch in enumerate(batches, start=1):
        labelled += batch
        rdir = Path(args.work) / "scratch" / f"round-{r}"
        model, seconds = _train(rdir, "model", labelled, prepared, settings, args.seed, args.threads)
        rows.append(
            {
                "strategy": "uncertainty, from scratch",
                "round": r,
                "labelled": len(labelled),
                "train_s": seconds,
                "heldout_dice": _heldout_dice(model, args.held, prepared, rdir / "heldout", settings, args),
            }
        )
    return rows


def report(rows: list[dict[str, Any]], args, settings: dict, out: Path) -> None:
    lines = [
        "# Smart labeling on STS (simulation mode): uncertainty vs random selection",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`",
        "",
        f"Held out (fold 0 test of the committed split): {', '.join(args.held)}. Initial set: "
        f"{', '.join(args.initial)}. Spacing {args.spacing} mm, {args.threads} threads.",
        "",
        "| strategy | round | labelled | train s | held-out Dice | batch Dice (raw vs corrected) | "
        "voxels changed | batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['round']} | {r['labelled']} | {r['train_s']:.0f} | "
            f"{r['heldout_dice']:.3f} | {r.get('batch_dice', float('nan')):.3f} | "
            f"{r.get('changed_share', float('nan')):.3f} | {r.get('batch', '')} |"
        )
    lines += ["", "Settings:", "", "```json", json.dumps(settings, indent=1, sort_keys=True), "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ibsi_sts" / "nifti"))
    ap.add_argument("--work", default="/tmp/medpipe_labeling_sts")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "labeling_sts.md"))
    ap.add_argument("--spacing", type=lambda s: [float(v) for v in s.split(",")], default=[2.0, 2.0, 4.0])
    ap.add_argument("--epochs0", type=int, default=60, help="epochs of round 0 (from scratch)")
    ap.add_argument("--epochs-ft", type=int, default=15, help="epochs of a fine-tuning round")
    ap.add_argument("--initial-size", type=int, default=6)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--labelled-max", type=int, default=30)
    ap.add_argument("--strategies", default="uncertainty,random")
    ap.add_argument("--scratch", action="store_true", help="also retrain each uncertainty round from scratch")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    split = read_folds(seg_sts.SPLIT)
    info = split["folds"][0]
    args.held = sorted(info["test"])
    args.candidates = sorted(info["train"] + info["val"])
    rng = np.random.default_rng(args.seed)
    args.initial = sorted(args.candidates[i] for i in rng.permutation(len(args.candidates))[: args.initial_size])
    args.rounds = (args.labelled_max - args.initial_size) // args.batch + 1
    settings = copy.deepcopy(seg_sts.CPU_SETTINGS)
    settings["train"]["epochs"] = args.epochs0
    settings["infer"]["tta"] = False
    work = Path(args.work) / "data"
    prepared = {p: seg_sts.prepare(p, Path(args.data), work, args.spacing, False) for p in args.candidates + args.held}
    first = _train(
        Path(args.work) / "round-0", "model", list(args.initial), prepared, settings, args.seed, args.threads
    )
    rows = [r for s in args.strategies.split(",") for r in campaign(s, args, split, settings, prepared, first)]
    if args.scratch:
        batches = [r["batch"].split(",") for r in rows if r["strategy"] == "uncertainty" and r.get("batch")]
        rows += scratch_rounds(args, settings, prepared, batches)
    report(rows, args, settings, Path(args.out))


if __name__ == "__main__":
    main()
