"""Figures of the ``signature`` stage: ROC curves of two mask sources and a calibration plot (PNG)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_curve

from medpipe.core.io import save_png
from medpipe.signature.delong import auc_delong, format_auc

logger = logging.getLogger(__name__)


def plot_roc(y: npt.ArrayLike, probabilities: Mapping[str, npt.ArrayLike], out: str | Path, *, title: str = "") -> Path:
    """ROC curves of the OOF probabilities of each source (legend: AUC with 95 % DeLong CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yy = np.asarray(y).astype(int)
    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=100)
    for name, p in probabilities.items():
        fpr, tpr, _ = roc_curve(yy, np.asarray(p, dtype=float))
        ax.plot(fpr, tpr, lw=1.5, label=f"{name}: AUC {format_auc(auc_delong(yy, p))}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_title(title or f"cross-validated ROC ({int(yy.sum())} events / {yy.size} subjects)", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return save_png(fig, out)


def calibration_bins(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted probability and observed event rate in ``n_bins`` quantile bins."""
    yy = np.asarray(y, dtype=float)
    pp = np.asarray(p, dtype=float)
    order = np.argsort(pp, kind="stable")
    bins = [b for b in np.array_split(order, n_bins) if b.size]
    return np.array([pp[b].mean() for b in bins]), np.array([yy[b].mean() for b in bins])


def plot_calibration(
    y: npt.ArrayLike, probabilities: Mapping[str, npt.ArrayLike], out: str | Path, *, n_bins: int = 5
) -> Path:
    """Calibration plot: observed event rate against mean predicted probability per quantile bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=100)
    for name, p in probabilities.items():
        pred, obs = calibration_bins(y, p, n_bins)
        ax.plot(pred, obs, marker="o", lw=1.2, label=name)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed event rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(f"calibration of OOF probabilities ({n_bins} quantile bins)", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return save_png(fig, out)
