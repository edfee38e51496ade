"""Learning curve of a training run: TSV table and PNG plot for the report."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medpipe.core.io import atomic_path

logger = logging.getLogger(__name__)

COLUMNS = ("epoch", "train_loss", "train_dice", "val_dice", "learning_rate")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NA" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_curve(rows: Sequence[dict[str, Any]], out_tsv: str | Path, out_png: str | Path, *, title: str) -> None:
    """Write ``rows`` (one per epoch, keys :data:`COLUMNS`) as TSV and plot loss and Dice per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["\t".join(COLUMNS)] + ["\t".join(_fmt(r[c]) for c in COLUMNS) for r in rows]
    with atomic_path(out_tsv) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker=".", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_dice.plot(epochs, [r["train_dice"] for r in rows], marker=".", label="Dice, training patches")
    val = [(r["epoch"], r["val_dice"]) for r in rows if not math.isnan(r["val_dice"])]
    if val:
        ax_dice.plot(*zip(*val, strict=True), marker="o", label="Dice, validation cases")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.legend()
    fig.suptitle(f"Learning curve, {title}")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)
