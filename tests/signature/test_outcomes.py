"""Tests of medpipe.signature.outcomes and the feature-matrix helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.core.errors import ConfigError, DataError
from medpipe.signature.features import CorrelationFilter, feature_keys, feature_matrix, preselect
from medpipe.signature.outcomes import check_events, read_outcomes

SHEET = ["sub-01", "sub-02", "sub-03", "sub-04"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outcomes.tsv"
    path.write_text(text)
    return path


def test_reads_binary_outcome_and_covariates(tmp_path: Path) -> None:
    path = _write(tmp_path, "subject\tgrade\tage\nsub-02\t1\t61\nsub-01\t0\t54\nsub-03\ttrue\t70\n")
    table = read_outcomes(path, outcome="grade", subjects=SHEET, covariates=["age"])
    assert list(table.index) == ["sub-01", "sub-02", "sub-03"]
    assert table["outcome"].tolist() == [0, 1, 1] and table["age"].tolist() == [54, 61, 70]


def test_positive_label(tmp_path: Path) -> None:
    path = _write(tmp_path, "subject\toutcome\nsub-01\tGood\nsub-02\tPoor\n")
    assert read_outcomes(path, outcome="outcome", positive="Poor")["outcome"].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("subject\tgrade\nsub-01\t1\nsub-99\t0\n", DataError, "not in the subject sheet: sub-99"),
        ("subject\tgrade\nsub-01\t1\nsub-02\t\n", DataError, "'grade' has no value for subjects sub-02"),
        ("subject\tgrade\nsub-01\t1\nsub-02\t2\n", DataError, "not binary.*sub-02='2'"),
        ("subject\tgrade\nsub-01\t1\nsub-01\t0\n", DataError, "more than once: sub-01"),
        ("subject\tgrade\nsub-01\t1\nsub-02\t1\n", DataError, r"one class only \(2 events, 0 non-events"),
        ("subject\tother\nsub-01\t1\n", ConfigError, r"columns \['grade'\] not in the outcome table"),
    ],
)
def test_refusals(tmp_path: Path, text: str, error: type[Exception], match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(error, match=match) as info:
        read_outcomes(path, outcome="grade", subjects=SHEET)
    assert str(path) in str(info.value)


def test_check_events() -> None:
    assert check_events([0, 1, 1, 0, 1], n_folds=2) == (3, 2)
    with pytest.raises(DataError, match="2 events and 6 non-events cannot fill 5 stratified folds"):
        check_events([1, 1, 0, 0, 0, 0, 0, 0], n_folds=5)


def _long() -> pd.DataFrame:
    rows = []
    for s in ("b", "a"):
        for source in ("human", "auto"):
            for f, v in (("original_firstorder_Mean", 1.0), ("original_shape_Volume", 2.0)):
                rows.append({"subject": s, "source": source, "feature": f, "kind": "pyradiomics", "value": v})
    rows.append({"subject": "a", "source": "human", "feature": "x_IBSI1", "kind": "ibsi-derived", "value": np.nan})
    rows.append({"subject": "a", "source": "human", "feature": "original_glcm_Idm", "kind": "pyradiomics",
                 "value": np.nan})  # fmt: skip
    rows.append({"subject": "b", "source": "human", "feature": "original_glcm_Idm", "kind": "pyradiomics",
                 "value": 3.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_feature_matrix_and_preselect() -> None:
    wide = feature_matrix(_long(), "human")
    assert list(wide.index) == ["a", "b"]
    assert list(wide.columns) == ["original_firstorder_Mean", "original_shape_Volume"]  # NaN feature dropped
    assert list(preselect(wide, {"original_shape_Volume"}).columns) == ["original_shape_Volume"]
    with pytest.raises(DataError, match="none of the 1 pre-selected"):
        preselect(wide, {"nope"})
    with pytest.raises(DataError, match="no feature rows for mask source 'erode'"):
        feature_matrix(_long(), "erode")
    with pytest.raises(DataError, match="without features"):
        feature_matrix(_long(), "auto", subjects=["a", "c"])


def test_correlation_filter_keeps_more_discriminative() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    strong = y + 0.5 * rng.normal(size=40)
    weak = strong + 0.05 * rng.normal(size=40)  # nearly the same feature, slightly less discriminative
    other = rng.normal(size=40)
    x = np.column_stack([weak, other, strong, np.ones(40)])
    filt = CorrelationFilter(0.9).fit(x, y)
    from medpipe.signature.features import univariate_auc

    aucs = univariate_auc(x[:, [0, 2]], y)
    keep = 2 if aucs[1] >= aucs[0] else 0
    assert filt.get_support().tolist() == [keep == 0, True, keep == 2, False]  # constant column dropped
    assert filt.transform(x).shape == (40, 2)


def test_figures(tmp_path: Path) -> None:
    from medpipe.signature.figures import calibration_bins, plot_calibration, plot_roc

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(15, int), np.zeros(15, int)]
    probs = {"human": np.clip(0.3 * y + rng.random(30) * 0.7, 0, 1), "auto": rng.random(30)}
    assert plot_roc(y, probs, tmp_path / "roc.png").stat().st_size > 0
    assert plot_calibration(y, probs, tmp_path / "cal.png").stat().st_size > 0
    pred, obs = calibration_bins(y, probs["auto"], 5)
    assert pred.shape == obs.shape == (5,) and np.all(np.diff(pred) >= 0)


def test_feature_keys_name_the_image_when_there_are_several() -> None:
    one = _long().assign(image="T1w")
    assert list(feature_matrix(one, "human").columns) == ["original_firstorder_Mean", "original_shape_Volume"]
    two = pd.concat([one, _long().assign(image="ADC")])
    assert list(feature_matrix(two, "human").columns) == [
        "ADC:original_firstorder_Mean",
        "ADC:original_shape_Volume",
        "T1w:original_firstorder_Mean",
        "T1w:original_shape_Volume",
    ]
    stats = pd.DataFrame({"image": ["T1w", "ADC"], "feature": ["f", "f"]})
    assert feature_keys(stats).tolist() == ["T1w:f", "ADC:f"]
    assert feature_keys(stats.iloc[:1]).tolist() == ["f"]


def test_feature_keys_name_the_region_when_there_are_several() -> None:
    """A peritumoral ring's features are other features than the structure's, also beside several images."""
    lesion = _long().assign(image="T1w", region="GTV")
    two = pd.concat([lesion, _long().assign(image="T1w", region="ring10")])
    assert list(feature_matrix(two, "human").columns) == [
        "GTV:original_firstorder_Mean",
        "GTV:original_shape_Volume",
        "ring10:original_firstorder_Mean",
        "ring10:original_shape_Volume",
    ]
    assert list(feature_matrix(lesion, "human").columns) == ["original_firstorder_Mean", "original_shape_Volume"]
    stats = pd.DataFrame({"image": ["T1w", "ADC"], "region": ["GTV", "ring10"], "feature": ["f", "f"]})
    assert feature_keys(stats).tolist() == ["T1w:GTV:f", "ADC:ring10:f"]
