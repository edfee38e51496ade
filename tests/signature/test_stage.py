"""Tests of medpipe.signature.stage: the rule-level jobs on a small long feature table, and start-up checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import write_tsv
from medpipe.signature.delong import auc_delong
from medpipe.signature.stage import check_signature_config, comparison_report, preselection_keys, signature_report

N = 24
SUBJECTS = [f"s{i:02d}" for i in range(N)]


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    """Features of sources human and auto (auto = human + noise), outcome driven by feature f0."""
    rng = np.random.default_rng(5)
    human = rng.normal(size=(N, 6))
    y = (human[:, 0] + 0.2 * rng.normal(size=N) > 0).astype(int)
    rows = []
    for source, values in (("human", human), ("auto", human + 0.3 * rng.normal(size=human.shape))):
        for i, s in enumerate(SUBJECTS):
            for j in range(values.shape[1]):
                rows.append(
                    {
                        "subject": s,
                        "source": source,
                        "kind": "pyradiomics",
                        "feature": f"f{j}",
                        "value": values[i, j],
                        "ibsi2_filter": "none",  # the feature table's text columns are not features
                        "ibsi2_compliance": "n/a (no filter)",
                    }
                )
    features = write_tsv(pd.DataFrame(rows), tmp_path / "features.tsv")
    outcomes = write_tsv(pd.DataFrame({"subject": SUBJECTS, "response": y}), tmp_path / "outcomes.tsv")
    return features, outcomes


def _settings(outcomes: Path, **over: object) -> dict:
    base = {"outcomes": str(outcomes), "outcome": "response", "model": {"n_folds": 3, "n_repeats": 2, "C": 1.0}}
    return with_defaults({**base, **over}, "signature")


def test_models_per_source_and_their_delong_comparison(tmp_path: Path) -> None:
    features, outcomes = _inputs(tmp_path)
    settings = _settings(outcomes)
    oof = {}
    for source in ("human", "auto"):
        out = tmp_path / source
        out.mkdir()
        signature_report(features, outcomes, out / "oof.tsv", out / "sel.tsv", out / "model.json",
                         source=source, settings=settings, labelled=SUBJECTS[:-2], seed=1)  # fmt: skip
        oof[source] = out / "oof.tsv"
        table = pd.read_csv(out / "oof.tsv", sep="\t", dtype={"subject": str})
        assert sorted(table["subject"]) == SUBJECTS[:-2]  # unlabelled subjects are not modelled
        record = json.loads((out / "model.json").read_text())
        assert record["n_subjects"] == N - 2 and record["cv"]["auc"] > 0.8
        selection = pd.read_csv(out / "sel.tsv", sep="\t")
        assert selection.sort_values("selection_frequency").iloc[-1]["feature"] == "f0"
    comparison_report(oof, tmp_path / "cmp.tsv", tmp_path / "roc.png", tmp_path / "cal.png",
                      pairs=[["human", "auto"]], level=0.95, ci="delong")  # fmt: skip
    row = pd.read_csv(tmp_path / "cmp.tsv", sep="\t").iloc[0]
    assert row["n_subjects"] == N - 2 and 0 < row["p"] <= 1
    assert row["text"].count(" vs ") == 1 and "P " in row["text"]
    assert (tmp_path / "roc.png").stat().st_size > 0 and (tmp_path / "cal.png").stat().st_size > 0


def test_test_and_external_subjects_are_scored_by_the_final_model_only(tmp_path: Path) -> None:
    """Sheet set: CV and the final fit use the train subjects; test / external ones get the final model's score
    once (reported per set with its DeLong CI) and are compared per set."""
    features, outcomes = _inputs(tmp_path)
    settings = _settings(outcomes)
    sets = {s: "external" if i >= 16 else "train" for i, s in enumerate(SUBJECTS)}
    oof = {}
    for source in ("human", "auto"):
        out = tmp_path / source
        out.mkdir()
        signature_report(features, outcomes, out / "oof.tsv", out / "sel.tsv", out / "model.json",
                         source=source, settings=settings, labelled=SUBJECTS, seed=1, sets=sets)  # fmt: skip
        oof[source] = out / "oof.tsv"
        table = pd.read_csv(out / "oof.tsv", sep="\t", dtype={"subject": str}).set_index("subject")
        assert table["set"].to_dict() == sets
        record = json.loads((out / "model.json").read_text())
        assert record["n_subjects"] == 16  # the model never saw the external subjects
        ext = table[table["set"] == "external"]
        assert ext["probability_sd"].isna().all()  # one score each, from the final model
        y = ext["outcome"].to_numpy()
        assert record["validation"]["external"]["n_subjects"] == 8
        assert record["validation"]["external"]["auc"] == pytest.approx(auc_delong(y, ext["probability"]).auc)
        assert record["validation"]["external"]["auc"] > 0.7  # the signal (f0) carries over
    comparison_report(oof, tmp_path / "cmp.tsv", tmp_path / "roc.png", tmp_path / "cal.png",
                      pairs=[["human", "auto"]], level=0.95, ci="delong")  # fmt: skip
    rows = pd.read_csv(tmp_path / "cmp.tsv", sep="\t").set_index("set")
    assert list(rows.index) == ["train", "external"] and rows.loc["external", "n_subjects"] == 8


def test_subjects_whose_automatic_mask_was_empty_are_left_out_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty automatic mask leaves its subject without auto features (radiomics writes no rows): the auto
    model neither trains on nor scores it, the human model still does, and the paired comparison uses the subjects
    both scored."""
    features, outcomes = _inputs(tmp_path)
    table = pd.read_csv(features, sep="\t", dtype={"subject": str})
    lost_train, lost_ext = SUBJECTS[3], SUBJECTS[20]
    table = table[~((table["source"] == "auto") & table["subject"].isin([lost_train, lost_ext]))]
    features = write_tsv(table, tmp_path / "features_lost.tsv")
    settings = _settings(outcomes)
    sets = {s: "external" if i >= 16 else "train" for i, s in enumerate(SUBJECTS)}
    oof = {}
    for source in ("human", "auto"):
        out = tmp_path / source
        out.mkdir()
        with caplog.at_level("WARNING"):
            signature_report(features, outcomes, out / "oof.tsv", out / "sel.tsv", out / "model.json",
                             source=source, settings=settings, labelled=SUBJECTS, seed=1, sets=sets)  # fmt: skip
        oof[source] = out / "oof.tsv"
    auto = pd.read_csv(oof["auto"], sep="\t", dtype={"subject": str}).set_index("subject")
    human = pd.read_csv(oof["human"], sep="\t", dtype={"subject": str}).set_index("subject")
    assert lost_train not in auto.index and lost_ext not in auto.index and len(human) == N
    assert json.loads((tmp_path / "auto/model.json").read_text())["n_subjects"] == 15
    assert f"['{lost_train}'] have no features" in caplog.text and f"['{lost_ext}'] have no features" in caplog.text
    comparison_report(oof, tmp_path / "cmp.tsv", tmp_path / "roc.png", tmp_path / "cal.png",
                      pairs=[["human", "auto"]], level=0.95, ci="delong")  # fmt: skip
    rows = pd.read_csv(tmp_path / "cmp.tsv", sep="\t").set_index("set")
    assert rows.loc["train", "n_subjects"] == 15 and rows.loc["external", "n_subjects"] == 7


def test_preselection_keys(tmp_path: Path) -> None:
    repro = write_tsv(
        pd.DataFrame({"feature": ["a", "b", "c"], "reproducible": [True, False, True]}), tmp_path / "r.tsv"
    )
    robust = write_tsv(pd.DataFrame({"feature": ["a", "b", "c"], "robust": [False, True, True]}), tmp_path / "b.tsv")
    assert preselection_keys("all") is None
    assert preselection_keys("reproducible", reproducibility=repro) == {"a", "c"}
    assert preselection_keys("robust", robustness=robust) == {"b", "c"}
    assert preselection_keys("reproducible_and_robust", reproducibility=repro, robustness=robust) == {"c"}
    with pytest.raises(ConfigError, match="needs the robust table"):
        preselection_keys("robust")


def test_start_up_check_names_the_problem(tmp_path: Path) -> None:
    _, outcomes = _inputs(tmp_path)
    ok = _settings(outcomes)
    assert len(check_signature_config(ok, subjects=SUBJECTS, labelled=SUBJECTS, sources=["human", "auto"])) == N
    with pytest.raises(ConfigError, match=r"signature.sources: \['auto'\] are not mask sources"):
        check_signature_config(ok, subjects=SUBJECTS, labelled=SUBJECTS, sources=["human"])
    with pytest.raises(ConfigError, match="pair"):
        bad = _settings(outcomes, sources=["human"], compare=[["human", "auto"]])
        check_signature_config(bad, subjects=SUBJECTS, labelled=SUBJECTS, sources=["human", "auto"])
    with pytest.raises(ConfigError, match=r"needs radiomics\.perturbations"):
        check_signature_config(_settings(outcomes, preselect="robust"), subjects=SUBJECTS, labelled=SUBJECTS,
                               sources=["human", "auto"])  # fmt: skip
    with pytest.raises(DataError, match="subjects not in the subject sheet: s23"):
        check_signature_config(ok, subjects=SUBJECTS[:-1], labelled=SUBJECTS, sources=["human", "auto"])
    y = pd.read_csv(outcomes, sep="\t", dtype={"subject": str}).set_index("subject")["response"]
    few = [*y[y == 1].index[:2], *y[y == 0].index[:5]]  # 2 events cannot fill 3 folds
    with pytest.raises(DataError, match="2 events and 5 non-events cannot fill 3 stratified folds"):
        check_signature_config(ok, subjects=SUBJECTS, labelled=few, sources=["human", "auto"])


def test_an_external_subject_without_one_of_the_signatures_features_is_left_out_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An automatic mask without one region (no core predicted on a shifted scan) gives its subject no value of
    that region's features: the final model, fitted on training subjects that have them, scores the other
    external subjects and names the one it cannot score instead of stopping."""
    features, outcomes = _inputs(tmp_path)
    table = pd.read_csv(features, sep="\t", dtype={"subject": str})
    lacking = SUBJECTS[21]
    table = table[~((table["source"] == "auto") & (table["subject"] == lacking) & (table["feature"] == "f5"))]
    features = write_tsv(table, tmp_path / "features_lacking.tsv")
    sets = {s: "external" if i >= 16 else "train" for i, s in enumerate(SUBJECTS)}
    out = tmp_path / "auto"
    out.mkdir()
    with caplog.at_level("WARNING"):
        signature_report(features, outcomes, out / "oof.tsv", out / "sel.tsv", out / "model.json",
                         source="auto", settings=_settings(outcomes), labelled=SUBJECTS, seed=1, sets=sets)  # fmt: skip
    scored = pd.read_csv(out / "oof.tsv", sep="\t", dtype={"subject": str}).set_index("subject")
    external = scored[scored["set"] == "external"]
    assert sorted(external.index) == sorted(s for s in SUBJECTS[16:] if s != lacking)
    assert json.loads((out / "model.json").read_text())["validation"]["external"]["n_subjects"] == 7
    assert f"subject {lacking} has no value of the signature's feature 'f5'" in caplog.text
