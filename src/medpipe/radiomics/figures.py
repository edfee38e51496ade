"""Report figure of the radiomics stage: key original-image features per subject and mask source."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medpipe.core.config import allowed_values
from medpipe.core.io import save_png

logger = logging.getLogger(__name__)

#: Original-image features shown (pyradiomics names), one panel each, when present.
KEY_FEATURES = (
    "original_shape_MeshVolume",
    "original_shape_Sphericity",
    "original_firstorder_Mean",
    "original_firstorder_Entropy",
    "original_glcm_JointEntropy",
    "original_glszm_ZoneEntropy",
)
_COLOURS = {"human": "#0a84ff", "auto": "#ff3b30"}


def save_feature_overview(table: pd.DataFrame, out: str | Path) -> Path:
    """Plot key features per subject, one column per mask source, paired by subject.

    Parameters
    ----------
    table
        Long feature table (columns ``subject``, ``source``, ``feature``, ``value``) as written by
        :func:`medpipe.radiomics.extract.collect`.
    out
        PNG to write.
    """
    if "image" in table.columns and len(table):  # one image: the first in name order
        table = table[table["image"] == table["image"].iloc[0]]
    names = [f for f in KEY_FEATURES if f in set(table["feature"])]
    sources = [s for s in allowed_values("radiomics", "sources") if s in set(table["source"])] or sorted(
        set(table["source"])
    )
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(2.4 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        wide = (
            table[table["feature"] == name]
            .pivot_table(index="subject", columns="source", values="value", aggfunc="first")
            .reindex(columns=sources)
        )
        x = np.arange(len(sources), dtype=float)
        for _, row in wide.iterrows():
            ax.plot(x, row.to_numpy(dtype=float), color="0.7", linewidth=0.8, zorder=1)
        for i, source in enumerate(sources):
            ax.scatter(
                np.full(len(wide), x[i]),
                wide[source].to_numpy(dtype=float),
                s=14,
                zorder=2,
                color=_COLOURS.get(source, "0.2"),
            )
        ax.set_xticks(x, sources)
        ax.set_xlim(-0.5, len(sources) - 0.5)
        ax.set_title(name.replace("original_", "").replace("_", "\n", 1), fontsize=8)
        ax.tick_params(labelsize=7)
    if not names:
        axes[0][0].text(0.5, 0.5, "no original-image features", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.suptitle(f"Radiomics: key features of {table['subject'].nunique()} subjects by mask source", fontsize=9)
    fig.tight_layout()
    save_png(fig, out, dpi=90)
    logger.info("radiomics overview: %d features, sources %s", len(names), sources)
    return Path(out)
