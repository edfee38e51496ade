"""Tests of medpipe.radiomics.figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from medpipe.radiomics.figures import KEY_FEATURES, save_feature_overview


def _table(features: tuple[str, ...]) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = [
        {"subject": f"s{i}", "source": src, "feature": f, "value": float(rng.normal())}
        for i in range(5)
        for src in ("human", "auto")
        for f in (*features, "wavelet-LLH_glcm_Idm")
    ]
    return pd.DataFrame(rows)


def test_one_panel_per_key_feature_and_reproducible_bytes(tmp_path: Path) -> None:
    two = save_feature_overview(_table(KEY_FEATURES[:2]), tmp_path / "two.png")
    six = save_feature_overview(_table(KEY_FEATURES), tmp_path / "six.png")
    w2, w6 = mpimg.imread(two).shape[1], mpimg.imread(six).shape[1]
    assert w6 == 3 * w2  # width grows with the number of panels (2.4 inch each)
    again = save_feature_overview(_table(KEY_FEATURES), tmp_path / "again.png")
    assert again.read_bytes() == six.read_bytes()


def test_table_without_original_features_still_draws(tmp_path: Path) -> None:
    out = save_feature_overview(_table(()), tmp_path / "none.png")
    assert mpimg.imread(out).shape[0] > 100
