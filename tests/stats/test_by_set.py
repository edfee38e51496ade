"""Retention per subject-sheet set and site (medpipe.stats.by_set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.stats.agreement import reproducibility_report, reproducibility_table, retention_by_class
from medpipe.stats.by_set import retention_by_set, retention_by_set_report
from tests.stats.test_agreement import _features


def _sets(n: int) -> tuple[dict[str, str], dict[str, str]]:
    subjects = [f"S{s:02d}" for s in range(n)]
    sets = {s: "external" if i >= n - 6 else "train" for i, s in enumerate(subjects)}
    sites = {s: ("B" if i % 2 else "C") if sets[s] == "external" else "A" for i, s in enumerate(subjects)}
    return sets, sites


def test_each_set_and_site_is_scored_on_its_own_subjects() -> None:
    features = _features(18)
    # The external subjects' automatic masks are worse: their "Good" features get large noise too.
    ext = features["subject"].isin([f"S{s:02d}" for s in range(12, 18)])
    good_auto = features["feature"].str.endswith("Good") & (features["source"] == "auto")
    features.loc[ext & good_auto, "value"] += np.random.default_rng(1).normal(0, 3.0, int((ext & good_auto).sum()))
    sets, sites = _sets(18)
    table = retention_by_set(features, sets=sets, sites=sites, cutoff=0.8, n_boot=100, seed=1, min_subjects=3)
    rows = table[table["class"] == "all"].set_index(["set", "site"])
    assert list(rows.index) == [("train", "all"), ("external", "all"), ("external", "B"), ("external", "C")]
    assert rows.loc[("train", "all"), "n_subjects"] == 12 and rows.loc[("external", "B"), "n_subjects"] == 3
    assert rows.loc[("train", "all"), "percent_reproducible"] > rows.loc[("external", "all"), "percent_reproducible"]
    # The train group equals the statistics computed on the train subjects alone.
    train = features[features["subject"].isin([s for s, v in sets.items() if v == "train"])]
    alone = retention_by_class(reproducibility_table(train, cutoff=0.8, n_boot=100, seed=1, min_subjects=3))
    got = table[(table["set"] == "train") & (table["site"] == "all")].drop(columns=["set", "site", "n_subjects"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), alone)


def test_small_groups_say_too_few_and_the_whole_table_is_reused(tmp_path: Path) -> None:
    features = _features(8)
    sets, sites = _sets(8)  # 2 train, 6 external
    features.to_csv(tmp_path / "f.tsv", sep="\t", index=False)
    table = retention_by_set(features, sets=sets, sites=sites, cutoff=0.8, n_boot=50, seed=0, min_subjects=3)
    train_all = table[(table["set"] == "train") & (table["class"] == "all")].iloc[0]
    assert train_all["n_evaluable"] == 0 and train_all["n_too_few_subjects"] == train_all["n_features"]
    # One set only (no set column): the whole table, read back from its TSV, gives the same retention.
    whole = reproducibility_report(
        tmp_path / "f.tsv", tmp_path / "rep.tsv", tmp_path / "ret.tsv", tmp_path / "ccc.png", cutoff=0.8, n_boot=50
    )
    out = retention_by_set_report(
        tmp_path / "f.tsv", tmp_path / "by_set.tsv", sets={}, sites={}, cutoff=0.8, n_boot=50, whole_table=whole
    )
    by_set = pd.read_csv(out, sep="\t").drop(columns=["set", "site", "n_subjects"])
    pd.testing.assert_frame_equal(by_set, pd.read_csv(tmp_path / "ret.tsv", sep="\t"))
