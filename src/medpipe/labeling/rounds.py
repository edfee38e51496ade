"""The per-round table and figure of a labeling campaign (``results/labeling/rounds.tsv`` / ``rounds.png``).

One row per round (:data:`ROUND_COLUMNS`): how its model was trained (subjects, from scratch or fine-tuned from
the previous round, epochs, seconds from the job's benchmark file, last validation Dice of its learning curve),
its Dice and HD95 on the held-out subjects (labelled ``test`` subjects of the sheet, never trained on), and for
its batch: Dice and HD95 of the raw prediction against the corrected mask, the share of voxels the corrector
changed, the correction minutes a corrector reported, and the round's status (corrected, waiting for
corrections, or last round).
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.core.errors import DataError
from medpipe.core.io import read_tsv, save_png, write_tsv
from medpipe.core.sidecar import read_sidecar
from medpipe.labeling.select import read_selection

logger = logging.getLogger(__name__)

ROUND_COLUMNS = [
    "round",
    "trained_on",
    "trained_from",
    "epochs",
    "train_seconds",
    "val_dice",
    "heldout_n",
    "heldout_dice",
    "heldout_hd95_mm",
    "batch",
    "batch_dice",
    "batch_hd95_mm",
    "changed_share",
    "correction_minutes",
    "status",
]
_ROUND = re.compile(r"round-(\d+)")


def _by_round(paths: Sequence[str | Path]) -> dict[int, list[Path]]:
    """Group files by the ``round-<r>`` part of their path."""
    out: dict[int, list[Path]] = defaultdict(list)
    for p in paths:
        m = _ROUND.search(str(p))
        if m is None:
            raise DataError("file of a labeling round has no round-<r> in its path", path=p)
        out[int(m.group(1))].append(Path(p))
    return out


def _mean_metrics(paths: Sequence[Path]) -> tuple[int, float, float]:
    """Number of subjects and mean Dice / HD95 of per-subject metrics tables."""
    if not paths:
        return 0, math.nan, math.nan
    table = pd.concat([read_tsv(p, dtype={"subject": str}) for p in paths], ignore_index=True)
    return int(table["subject"].nunique()), float(table["dice"].mean()), float(table["hd95_mm"].mean())


def _training(model: Path, benchmark: Path, curve: Path) -> dict[str, Any]:
    """Training facts of one round's model."""
    record = read_sidecar(model)
    init = record["parameters"]["train"].get("init_checkpoint")
    m = _ROUND.search(str(init)) if init else None
    val = read_tsv(curve)["val_dice"].dropna()
    return {
        "trained_on": len(record["subjects"]) + len(record.get("validation_subjects", [])),
        "trained_from": f"round-{m.group(1)}" if m else ("scratch" if not init else str(init)),
        "epochs": int(record["parameters"]["train"]["epochs"]),
        "train_seconds": float(read_tsv(benchmark)["s"].iloc[0]),
        "val_dice": float(val.iloc[-1]) if len(val) else math.nan,
    }


def _batch(accepted: Path) -> dict[str, Any]:
    table = read_tsv(accepted, dtype={"subject": str})
    minutes = table["correction_minutes"].dropna()
    return {
        "changed_share": float(table["changed_share"].mean()),
        "correction_minutes": float(minutes.sum()) if len(minutes) else math.nan,
    }


def rounds_table(
    *,
    models: Sequence[str | Path],
    benchmarks: Sequence[str | Path],
    curves: Sequence[str | Path],
    selections: Sequence[str | Path],
    accepted: Sequence[str | Path],
    batch_metrics: Sequence[str | Path],
    heldout_metrics: Sequence[str | Path],
    status: Mapping[int, str],
    out_tsv: str | Path,
    out_png: str | Path,
) -> pd.DataFrame:
    """Tabulate and plot every round run so far (files are grouped by the ``round-<r>`` of their path).

    Parameters
    ----------
    models, benchmarks, curves
        Per round: ``model.pt`` (its sidecar is read), the training job's benchmark TSV, the learning curve.
    selections
        Per round with a pool left: the selection record (the batch).
    accepted, batch_metrics
        Per corrected round: ``accepted.tsv`` and the batch's metrics tables (raw prediction vs correction).
    heldout_metrics
        Per round: the held-out subjects' metrics tables (round model vs human label).
    status
        Round -> status text.
    out_tsv, out_png
        The table (:data:`ROUND_COLUMNS`) and its figure.
    """
    model, bench, curve = _by_round(models), _by_round(benchmarks), _by_round(curves)
    sel, acc, bm, hm = _by_round(selections), _by_round(accepted), _by_round(batch_metrics), _by_round(heldout_metrics)
    rows = []
    for r in sorted(model):
        row: dict[str, Any] = {"round": r, **_training(model[r][0], bench[r][0], curve[r][0])}
        row["heldout_n"], row["heldout_dice"], row["heldout_hd95_mm"] = _mean_metrics(hm.get(r, []))
        row["batch"] = ",".join(read_selection(sel[r][0])) if r in sel else ""
        _, row["batch_dice"], row["batch_hd95_mm"] = _mean_metrics(bm.get(r, []))
        row.update(_batch(acc[r][0]) if r in acc else {"changed_share": math.nan, "correction_minutes": math.nan})
        row["status"] = status.get(r, "")
        rows.append(row)
    table = pd.DataFrame(rows, columns=ROUND_COLUMNS)
    write_tsv(table, out_tsv)
    _plot(table, out_png)
    logger.info("labeling: %d rounds tabulated in %s", len(table), out_tsv)
    return table


def _plot(table: pd.DataFrame, out_png: str | Path) -> Path:
    """Dice per round (held out; raw prediction vs correction), share of voxels changed, training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    r = table["round"]
    axes[0].plot(r, table["heldout_dice"], "o-", label="held-out subjects")
    axes[0].plot(r, table["batch_dice"], "s--", label="batch: prediction vs correction")
    axes[0].set(xlabel="round", ylabel="Dice", ylim=(0, 1), title="Dice per round")
    axes[0].legend(fontsize=7)
    axes[1].bar(r, table["changed_share"].fillna(0.0))
    axes[1].set(xlabel="round", ylabel="share of voxels changed", ylim=(0, 1), title="Correction effort")
    axes[2].bar(
        r, table["train_seconds"], color=["grey" if f == "scratch" else "tab:blue" for f in table["trained_from"]]
    )
    axes[2].set(xlabel="round", ylabel="seconds", title="Training (grey: from scratch)")
    for ax in axes:
        ax.set_xticks(list(r))
    fig.tight_layout()
    return save_png(fig, out_png)
