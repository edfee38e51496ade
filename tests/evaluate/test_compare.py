"""Tests of medpipe.evaluate.compare: paired Wilcoxon signed-rank and t-test on two metric tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medpipe.core.errors import DataError
from medpipe.evaluate.compare import compare_results, paired_tests


def test_all_positive_differences_exact_wilcoxon_p():
    a = np.linspace(0.6, 0.8, 10)
    b = a + np.linspace(0.01, 0.10, 10)  # ten positive, distinct differences
    res = paired_tests(a, b)
    assert res["n"] == 10
    assert res["wilcoxon_p"] == pytest.approx(2 / 2**10)  # exact two-sided: only the all-positive ranking
    assert res["wilcoxon_stat"] == 0.0  # scipy reports the smaller rank sum
    d = b - a
    assert res["ttest_stat"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)))
    assert res["mean_diff"] == pytest.approx(d.mean())


def test_worked_paired_t_example():
    # Differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t = 3 / (sqrt(2.5)/sqrt(5)) = 4.2426..., df 4
    res = paired_tests([10, 10, 10, 10, 10], [11, 12, 13, 14, 15])
    assert res["ttest_stat"] == pytest.approx(3 / math.sqrt(2.5 / 5))
    assert res["ttest_p"] == pytest.approx(0.013236, abs=1e-5)  # t(4) = 4.2426, two-sided
    assert res["wilcoxon_p"] == pytest.approx(2 / 2**5)


def test_edge_cases_are_defined():
    same = paired_tests([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert (same["wilcoxon_p"], same["ttest_p"], same["ttest_stat"]) == (1.0, 1.0, 0.0)
    one = paired_tests([0.7, math.nan], [0.8, 0.9])
    assert one["n"] == 1 and math.isnan(one["wilcoxon_p"]) and "at least 2" in one["note"]
    const = paired_tests([0.5, 0.6, 0.7, 0.8], [0.6, 0.7, 0.8, 0.9])
    assert const["ttest_p"] == 0.0 and const["note"] == "constant non-zero difference"
    with pytest.raises(DataError, match="length"):
        paired_tests([1.0, 2.0], [1.0])


def test_compare_results_pairs_by_subject_and_label(tmp_path):
    rng = np.random.default_rng(5)
    subjects = [f"s{i:02d}" for i in range(12)]
    base = rng.uniform(0.6, 0.85, 12)
    a = pd.DataFrame({"subject": subjects, "label": "lesion", "dice": base, "hd95_mm": rng.uniform(2, 6, 12)})
    b = a.sample(frac=1.0, random_state=1).copy()  # shuffled rows: pairing must use the subject column
    b["dice"] = b["dice"] + 0.05
    extra = pd.DataFrame({"subject": ["extra"], "label": ["lesion"], "dice": [0.1], "hd95_mm": [9.0]})
    b = pd.concat([b, extra])
    a.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    b.to_csv(tmp_path / "b.tsv", sep="\t", index=False)
    out = compare_results(
        tmp_path / "a.tsv",
        tmp_path / "b.tsv",
        tmp_path / "cmp.tsv",
        name_a="unet",
        name_b="unet_se",
        metrics=("dice", "hd95_mm"),
    )
    dice = out.set_index("metric").loc["dice"]
    assert dice["n"] == 12 and dice["mean_diff"] == pytest.approx(0.05)
    assert dice["wilcoxon_p"] == pytest.approx(2 / 2**12)
    assert dice["ttest_p"] == 0.0 and dice["ttest_stat"] == math.inf  # constant difference: zero variance
    hd = out.set_index("metric").loc["hd95_mm"]
    assert hd["wilcoxon_p"] == 1.0 and hd["mean_diff"] == 0.0
    written = pd.read_csv(tmp_path / "cmp.tsv", sep="\t")
    assert list(written["metric"]) == ["dice", "hd95_mm"] and set(written["name_b"]) == {"unet_se"}
    with pytest.raises(DataError, match="lacks columns"):
        compare_results(tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "x.tsv", metrics=("msd_mm",))
