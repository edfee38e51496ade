"""Robustness tables: per-perturbation agreement, ICC over all perturbations, the 'all' retention block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.core.errors import DataError
from medpipe.stats.agreement import icc
from medpipe.stats.robustness import robustness_report, robustness_tables


def _ibsi2(image_type: str) -> dict[str, str]:
    """The feature table's IBSI-2 text columns (the readers must leave them alone)."""
    if image_type == "original":
        return {"ibsi2_filter": "none", "ibsi2_compliance": "n/a (no filter)"}
    return {"ibsi2_filter": f"filter of {image_type}", "ibsi2_compliance": "non-compliant (2.A: fails, a reason)"}


def _features(n: int = 15) -> pd.DataFrame:
    """human + erode + dilate: 'Stable' agrees under both, 'Fragile' breaks under dilate only."""
    rng = np.random.default_rng(3)
    rows = []
    specs = [("original", "shape", "Stable"), ("original", "glcm", "Fragile"), ("wavelet-LLH", "glcm", "Stable")]
    for image_type, cls, name in specs:
        truth = rng.normal(10, 2, n)
        values = {
            "human": truth,
            "erode": truth + rng.normal(0, 0.02, n),
            "dilate": truth + rng.normal(0, 0.02 if name == "Stable" else 4.0, n),
        }
        for source, vals in values.items():
            rows += [
                {
                    "subject": f"S{s:02d}",
                    "source": source,
                    "region": "lesion",
                    "image": "T1w",
                    "image_type": image_type,
                    "feature_class": cls,
                    "feature": f"{image_type}_{cls}_{name}",
                    "kind": "pyradiomics",
                    "value": v,
                    "ibsi_code": "",
                    **_ibsi2(image_type),
                }
                for s, v in enumerate(vals)
            ]
    return pd.DataFrame(rows)


def test_robust_only_when_reproducible_under_every_perturbation() -> None:
    features = _features()
    table, by_class = robustness_tables(features, perturbations=["erode", "dilate"], n_boot=200, seed=1)
    table = table.set_index("feature")
    fragile = "original_glcm_Fragile"
    assert table.loc[fragile, "reproducible_erode"] and not table.loc[fragile, "reproducible_dilate"]
    assert not table.loc[fragile, "robust"]
    assert table.loc["original_shape_Stable", "robust"] and table.loc["wavelet-LLH_glcm_Stable", "robust"]
    # ICC over human + both perturbations equals pingouin on the 3-column matrix
    wide = features[features["feature"] == fragile].pivot(index="subject", columns="source", values="value")
    expected = icc(wide[["human", "erode", "dilate"]].to_numpy())
    assert table.loc[fragile, "icc31_all"] == pytest.approx(expected["icc31"])
    assert table.loc[fragile, "n_all"] == 15
    blocks = by_class.set_index(["perturbation", "class"])["percent_reproducible"]
    assert blocks[("erode", "texture")] == 100.0 and blocks[("dilate", "texture")] == 0.0
    assert blocks[("all", "texture")] == 0.0 and blocks[("all", "shape")] == 100.0
    assert blocks[("all", "all")] == pytest.approx(200 / 3, abs=0.01)


def test_report_files_and_determinism(tmp_path: Path) -> None:
    path = tmp_path / "features.tsv"
    _features().to_csv(path, sep="\t", index=False)
    args = {"perturbations": ["erode"], "n_boot": 100, "seed": 2}
    out = robustness_report(path, tmp_path / "r.tsv", tmp_path / "c.tsv", tmp_path / "r.png", **args)
    robustness_report(path, tmp_path / "r2.tsv", tmp_path / "c2.tsv", tmp_path / "r2.png", **args)
    assert out.read_bytes() == (tmp_path / "r2.tsv").read_bytes()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(out, sep="\t")
    assert "icc31_all" not in table.columns  # one perturbation: its own ICC is the ICC
    assert table["robust"].all()


def test_missing_perturbation_source_is_named(tmp_path: Path) -> None:
    features = _features()
    with pytest.raises(DataError, match="'shift'"):
        robustness_tables(features, perturbations=["shift"], n_boot=100)
    with pytest.raises(DataError, match="no mask perturbations"):
        robustness_tables(features, perturbations=[], n_boot=100)


def test_robustness_is_per_image() -> None:
    """Two images: per-image rows, the ICC over all sources joined per image; the bars pool the images."""
    first = _features()
    second = _features().assign(image="CT")
    second.loc[second["source"] == "erode", "value"] += np.random.default_rng(9).normal(
        0, 5, (second["source"] == "erode").sum()
    )
    table, by_class = robustness_tables(
        pd.concat([first, second]), perturbations=["erode", "dilate"], n_boot=100, min_subjects=3
    )
    assert table.groupby("image").size().to_dict() == {"CT": 3, "T1w": 3}
    robust = table.set_index(["image", "feature"])["robust"]
    assert robust[("T1w", "original_shape_Stable")] and not robust[("CT", "original_shape_Stable")]
    alone, _ = robustness_tables(first, perturbations=["erode", "dilate"], n_boot=100, min_subjects=3)
    ours = table[table["image"] == "T1w"].reset_index(drop=True)
    assert np.allclose(ours["icc31_all"], alone["icc31_all"])
    assert set(by_class["image"]) == {"CT", "T1w", "all"}


def test_robustness_is_per_region(tmp_path: Path) -> None:
    """A ring region: its own rows and blocks, one panel per region in the figure."""
    lesion = _features()
    ring = _features().assign(region="ring10")
    ring.loc[ring["source"] == "dilate", "value"] += 50.0
    table, by_class = robustness_tables(
        pd.concat([lesion, ring]), perturbations=["erode", "dilate"], n_boot=100, min_subjects=3
    )
    robust = table.set_index(["region", "feature"])["robust"]
    assert robust[("lesion", "original_shape_Stable")] and not robust[("ring10", "original_shape_Stable")]
    assert set(by_class["region"]) == {"lesion", "ring10"}
    path = tmp_path / "features.tsv"
    pd.concat([lesion, ring]).to_csv(path, sep="\t", index=False)
    robustness_report(path, tmp_path / "r.tsv", tmp_path / "c.tsv", tmp_path / "r.png", perturbations=["erode"])
    assert set(pd.read_csv(tmp_path / "c.tsv", sep="\t")["region"]) == {"lesion", "ring10"}
