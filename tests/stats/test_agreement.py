"""Agreement statistics against hand-computed and published values; the reproducibility report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.core.errors import DataError
from medpipe.stats.agreement import (
    agreement,
    bland_altman,
    ccc_bootstrap_ci,
    feature_group,
    icc,
    lin_ccc,
    pooled,
    reproducibility_report,
    reproducibility_table,
    retention_by_class,
)

#: Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
)


def test_ccc_identical_is_one() -> None:
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    assert lin_ccc(x, x) == pytest.approx(1.0)


def test_ccc_hand_computed() -> None:
    x = np.arange(1.0, 6.0)  # mean 3, population variance 2
    # y = x + 1: 2*2 / (2 + 2 + 1) = 0.8
    assert lin_ccc(x, x + 1) == pytest.approx(0.8)
    # y = 2x: cov 4, var_y 8, (3 - 6)^2 = 9 -> 8 / 19
    assert lin_ccc(x, 2 * x) == pytest.approx(8 / 19)
    # perfect negative agreement around the same mean: y = 6 - x -> -1
    assert lin_ccc(x, 6 - x) == pytest.approx(-1.0)


def test_shift_lowers_ccc_not_icc31() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10, 2, 20)
    y = x + 3.0
    assert lin_ccc(x, y) < 0.5
    out = icc(np.column_stack([x, y]))
    assert out["icc31"] == pytest.approx(1.0)
    assert out["icc21"] < 0.5  # absolute agreement penalises the shift like CCC


def test_icc_shrout_fleiss_published_values() -> None:
    out = icc(SHROUT_FLEISS)
    # published (Shrout & Fleiss 1979, Table 4): ICC(2,1) = .29, ICC(3,1) = .71
    assert round(out["icc21"], 2) == 0.29
    assert round(out["icc31"], 2) == 0.71
    # ANOVA by hand: BMS 11.24, JMS 32.49, EMS 1.02 (k = 4, n = 6)
    bms, jms, ems, k, n = 11.2417, 32.4861, 1.0194, 4, 6
    assert out["icc31"] == pytest.approx((bms - ems) / (bms + (k - 1) * ems), abs=1e-3)
    assert out["icc21"] == pytest.approx((bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n), abs=1e-3)
    assert out["icc31_ci_low"] < out["icc31"] < out["icc31_ci_high"]
    assert out["icc21_ci_low"] < out["icc21"] < out["icc21_ci_high"]
    # CIs unrounded (pingouin rounds to 2 decimals by default)
    assert round(out["icc31_ci_low"], 2) != out["icc31_ci_low"]


def test_bootstrap_ci_is_seeded_and_brackets_estimate() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 30)
    y = x + rng.normal(0, 0.3, 30)
    a = ccc_bootstrap_ci(x, y, n_boot=500, seed=7)
    assert a == ccc_bootstrap_ci(x, y, n_boot=500, seed=7)
    assert a != ccc_bootstrap_ci(x, y, n_boot=500, seed=8)
    assert a[0] < lin_ccc(x, y) < a[1]


def test_bland_altman_hand_computed() -> None:
    mean, low, high = bland_altman([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 5.0])
    d = np.array([1.0, 0.0, 2.0, 1.0])
    assert mean == pytest.approx(1.0)
    assert low == pytest.approx(1.0 - 1.96 * d.std(ddof=1))
    assert high == pytest.approx(1.0 + 1.96 * d.std(ddof=1))


def test_degenerate_cases_are_explicit() -> None:
    few = agreement([1.0, 2.0], [1.0, 2.0])
    assert few["status"] == "too_few_subjects" and not few["reproducible"] and np.isnan(few["ccc"])
    const = agreement([5.0] * 6, [5.0] * 6)
    assert const["status"] == "constant" and const["ccc"] == 1.0 and not const["reproducible"]
    apart = agreement([5.0] * 6, [6.0] * 6)
    assert apart["status"] == "constant" and apart["ccc"] == 0.0
    ok = agreement(np.arange(6.0), np.arange(6.0) + 0.01, n_boot=100)
    assert ok["status"] == "ok" and ok["reproducible"] and ok["ccc"] > 0.99


def test_feature_groups() -> None:
    assert feature_group("original", "shape") == "shape"
    assert feature_group("original", "firstorder") == "first-order"
    assert feature_group("original", "glszm") == "texture"
    assert feature_group("wavelet-LLH", "glcm") == "wavelet"
    assert feature_group("log-sigma-2-0-mm-3D", "firstorder") == "LoG"


def _ibsi2(image_type: str) -> dict[str, str]:
    """The feature table's IBSI-2 text columns (the readers must leave them alone)."""
    if image_type == "original":
        return {"ibsi2_filter": "none", "ibsi2_compliance": "n/a (no filter)"}
    return {"ibsi2_filter": f"filter of {image_type}", "ibsi2_compliance": "non-compliant (2.A: fails, a reason)"}


def _features(n_subjects: int = 12) -> pd.DataFrame:
    """Synthetic long table: per class one reproducible (tiny noise) and one poor (large noise) feature."""
    rng = np.random.default_rng(0)
    rows = []
    specs = [
        ("original", "shape", "Good", 0.01),
        ("original", "shape", "Bad", 3.0),
        ("original", "firstorder", "Good", 0.01),
        ("original", "glcm", "Bad", 3.0),
        ("wavelet-LLH", "glcm", "Good", 0.01),
        ("wavelet-LLH", "glrlm", "Bad", 3.0),
        ("log-sigma-2-0-mm-3D", "ngtdm", "Good", 0.01),
        ("original", "gldm", "Const", 0.0),
    ]
    for image_type, cls, name, noise in specs:
        truth = rng.normal(0, 1, n_subjects) if name != "Const" else np.ones(n_subjects)
        for source, values in (("human", truth), ("auto", truth + noise * rng.normal(0, 1, n_subjects))):
            for s, v in enumerate(values):
                rows.append(
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
                )
    return pd.DataFrame(rows)


def test_reproducibility_report(tmp_path: Path) -> None:
    features = _features()
    features.to_csv(tmp_path / "features.tsv", sep="\t", index=False)
    out = reproducibility_report(
        tmp_path / "features.tsv",
        tmp_path / "rep.tsv",
        tmp_path / "ret.tsv",
        tmp_path / "ccc.png",
        cutoff=0.8,
        n_boot=200,
        seed=1,
    )
    table = pd.read_csv(out, sep="\t")
    assert len(table) == 8
    good = table[table["feature"].str.endswith("Good")]
    bad = table[table["feature"].str.endswith("Bad")]
    assert good["reproducible"].all() and not bad["reproducible"].any()
    assert (table.loc[table["feature"].str.endswith("Const"), "status"] == "constant").all()
    assert (good["ccc_ci_low"] <= good["ccc"]).all() and (good["icc31"] > 0.99).all()
    retention = pd.read_csv(tmp_path / "ret.tsv", sep="\t").set_index("class")
    assert list(retention.index) == ["shape", "first-order", "texture", "wavelet", "LoG", "all"]
    assert retention.loc["shape", "percent_reproducible"] == 50.0
    assert retention.loc["first-order", "percent_reproducible"] == 100.0
    assert retention.loc["texture", "percent_reproducible"] == 0.0
    assert retention.loc["texture", "n_constant"] == 1 and retention.loc["texture", "n_evaluable"] == 1
    assert retention.loc["all", "n_reproducible"] == 4 and retention.loc["all", "n_evaluable"] == 7
    assert (tmp_path / "ccc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # deterministic: same inputs -> byte-identical outputs
    reproducibility_report(
        tmp_path / "features.tsv",
        tmp_path / "rep2.tsv",
        tmp_path / "ret2.tsv",
        tmp_path / "ccc2.png",
        cutoff=0.8,
        n_boot=200,
        seed=1,
    )
    assert (tmp_path / "rep2.tsv").read_bytes() == out.read_bytes()
    assert (tmp_path / "ccc2.png").read_bytes() == (tmp_path / "ccc.png").read_bytes()


def test_missing_source_and_unpaired_subjects(tmp_path: Path) -> None:
    features = _features(6)
    path = tmp_path / "f.tsv"
    features[features["source"] == "human"].to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match="'auto'"):
        reproducibility_report(path, tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.png", n_boot=10)
    # a subject with only one source is left out; 2 complete subjects -> too few
    few = features[features["subject"].isin(["S00", "S01"]) | (features["source"] == "human")]
    few.to_csv(path, sep="\t", index=False)
    reproducibility_report(path, tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.png", n_boot=10)
    table = pd.read_csv(tmp_path / "a.tsv", sep="\t")
    assert (table["n"] == 2).all() and (table["status"] == "too_few_subjects").all()


def test_settings_default_to_the_schema_and_min_subjects_is_threaded():
    from medpipe.core.config import with_defaults
    from medpipe.stats.agreement import stats_setting

    schema = with_defaults({}, "stats")
    assert stats_setting("cutoff", None) == schema["ccc_cutoff"]
    assert stats_setting("n_boot", None) == schema["bootstrap"]
    assert stats_setting("min_subjects", None) == schema["min_subjects"] == 3
    assert stats_setting("min_subjects", 5) == 5
    x = np.arange(4.0)
    assert agreement(x, x + 0.1, n_boot=50)["status"] == "ok"
    assert agreement(x, x + 0.1, n_boot=50, min_subjects=5)["status"] == "too_few_subjects"
    with pytest.raises(ValueError, match=">= 5 subjects"):
        icc(np.column_stack([x, x]), min_subjects=5)


def test_reproducibility_and_retention_are_per_image() -> None:
    """Two images (radiomics.images): one row per image and feature; retention per image, then pooled."""
    t1 = _features()
    t2 = _features().assign(image="ADC")
    poor = t2["source"] == "auto"  # every ADC feature of the automatic mask is noise: nothing reproducible there
    t2.loc[poor, "value"] = np.random.default_rng(5).normal(0, 1, int(poor.sum()))
    table = reproducibility_table(pd.concat([t1, t2]), n_boot=100, min_subjects=3)
    assert table.groupby("image").size().to_dict() == {"ADC": 8, "T1w": 8}
    alone = reproducibility_table(t1, n_boot=100, min_subjects=3)
    same = table[table["image"] == "T1w"].reset_index(drop=True)
    pd.testing.assert_frame_equal(same, alone)  # an image's statistics do not depend on the other images
    retention = retention_by_class(table)
    assert list(retention.columns[:3]) == ["image", "region", "class"]
    assert list(dict.fromkeys(retention["image"])) == ["ADC", "T1w", "all"]
    overall = retention[retention["class"] == "all"].set_index("image")
    assert overall.loc["ADC", "n_reproducible"] == 0 and overall.loc["T1w", "n_reproducible"] == 4
    assert overall.loc["all", "n_reproducible"] == 4
    assert overall.loc["all", "n_features"] == overall.loc["ADC", "n_features"] + overall.loc["T1w", "n_features"]
    assert set(pooled(retention)["image"]) == {"all"}
    assert set(pooled(retention_by_class(alone))["image"]) == {"T1w"}


def test_reproducibility_and_retention_are_per_region() -> None:
    """A derived region (a peritumoral ring) pairs only with the same region's rows and has its own blocks."""
    lesion = _features()
    ring = _features().assign(region="ring10")
    poor = ring["source"] == "auto"  # the automatic ring's features are noise: nothing of the ring reproducible
    ring.loc[poor, "value"] = np.random.default_rng(8).normal(0, 1, int(poor.sum()))
    table = reproducibility_table(pd.concat([ring, lesion]), n_boot=100, min_subjects=3)
    assert table.groupby("region").size().to_dict() == {"lesion": 8, "ring10": 8}
    assert int(table["n"].max()) == lesion["subject"].nunique()  # pairs are per subject, never across regions
    alone = reproducibility_table(lesion, n_boot=100, min_subjects=3)
    pd.testing.assert_frame_equal(table[table["region"] == "lesion"].reset_index(drop=True), alone)
    retention = retention_by_class(table)
    overall = retention[retention["class"] == "all"].set_index("region")
    assert overall.loc["lesion", "n_reproducible"] == 4 and overall.loc["ring10", "n_reproducible"] == 0
    assert set(retention["image"]) == {"T1w"}  # one image: no pooled block, in either region
    assert sorted(pooled(retention).drop_duplicates("region")["region"]) == ["lesion", "ring10"]
