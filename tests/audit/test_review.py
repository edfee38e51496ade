"""Review: flagged-case list from per-case records, reviewer sign-off read back into exclusions/re-runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.audit.review import (
    excluded_subjects,
    flagged_cases,
    read_signoff,
    rerun_targets,
    summarise_signoff,
    write_flagged_cases,
)
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.records import uncertainty_path, write_uncertainty
from medpipe.segment.infer import uncertainty_summary


def _records(root: Path) -> list[Path]:
    out = []
    for subject, score in (("01", 0.05), ("02", 0.31), ("03", 0.12), ("04", 0.50)):
        path = root / f"results/predict/sub-{subject}/sub-{subject}_uncertainty.json"
        path.parent.mkdir(parents=True)
        record = {"subject": subject, "score": score, "threshold": 0.2, "flag": score > 0.2}
        path.write_text(json.dumps(record))
        out.append(path)
    return out


def test_flagged_cases_table_and_html(tmp_path: Path) -> None:
    records = _records(tmp_path)
    cases = write_flagged_cases(records, tmp_path / "flagged.tsv", tmp_path / "flagged.html")
    assert [(c.subject, c.stage) for c in cases] == [("02", "predict"), ("04", "predict")]
    table = pd.read_csv(tmp_path / "flagged.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns[:4]) == ["subject", "stage", "decision", "comment"]
    assert table["subject"].tolist() == ["02", "04"]
    assert table["reason"].tolist() == ["score 0.31 > threshold 0.2", "score 0.5 > threshold 0.2"]
    assert (table["decision"] == "").all()
    html = (tmp_path / "flagged.html").read_text()
    assert "2 of 4 case records are flagged" in html and "<td>04</td>" in html


def test_review_page_lists_the_subjects_the_signoff_excludes(tmp_path: Path) -> None:
    records = _records(tmp_path)
    signoff = tmp_path / "failed_jobs.tsv"
    signoff.write_text(
        "subject\tstage\tdecision\tcomment\trule\tlog\n"
        "BAD1\tconvert_sequence\texclude\tjob convert_sequence failed: DicomError: truncated\t"
        "convert_sequence\tlogs/convert_sequence/sub-BAD1_T1w.log\n"
        "04\tpredict\tok\tlooked fine\t\t\n"
    )
    write_flagged_cases(records, tmp_path / "flagged.tsv", tmp_path / "flagged.html", signoff=signoff)
    html = (tmp_path / "flagged.html").read_text()
    excluded = html.split("Subjects excluded by the sign-off", 1)[1]
    assert "1 subject(s) are excluded from this run by the sign-off failed_jobs.tsv" in html
    assert "<td>BAD1</td>" in excluded and "job convert_sequence failed: DicomError: truncated" in excluded
    assert "<td>04</td>" not in excluded  # approved, not excluded
    table = pd.read_csv(tmp_path / "flagged.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert table.set_index("subject").loc["04", "decision"] == "ok"


def test_no_flags_gives_an_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "results/predict/sub-01/sub-01_uncertainty.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"score": 0.01, "threshold": 0.2, "flag": false}')
    assert write_flagged_cases([path], tmp_path / "f.tsv") == []
    assert pd.read_csv(tmp_path / "f.tsv", sep="\t").empty


def test_filled_template_round_trip(tmp_path: Path) -> None:
    records = _records(tmp_path)
    write_flagged_cases(records, tmp_path / "flagged.tsv")
    table = pd.read_csv(tmp_path / "flagged.tsv", sep="\t", dtype=str, keep_default_na=False)
    table["decision"] = ["exclude", "redo"]
    table["comment"] = ["motion", "bad mask"]
    table.to_csv(tmp_path / "signed.tsv", sep="\t", index=False)
    assert excluded_subjects(tmp_path / "signed.tsv") == ["02"]
    # decisions already taken are carried into the next flagged list
    write_flagged_cases(records, tmp_path / "again.tsv", signoff=tmp_path / "signed.tsv")
    again = pd.read_csv(tmp_path / "again.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert again["decision"].tolist() == ["exclude", "redo"]
    assert again["comment"].tolist() == ["motion", "bad mask"]
    results = tmp_path / "results"
    (results / "predict/sub-04/sub-04_pred.nii.gz").write_bytes(b"x")
    assert rerun_targets(tmp_path / "signed.tsv", results) == [
        results / "predict/sub-04/sub-04_pred.nii.gz",
        results / "predict/sub-04/sub-04_uncertainty.json",
    ]


def test_csv_signoff_and_outcome(tmp_path: Path) -> None:
    path = tmp_path / "signoff.csv"
    path.write_text(
        "subject,stage,decision,comment\n01,skullstrip,redo,cuts cerebellum\n"
        "01,predict,exclude,\n02,predict,OK,fine\n03,predict,,not reviewed yet\n"
    )
    outcome = summarise_signoff(read_signoff(path))
    assert outcome.excluded == ["01"]
    assert outcome.rerun == []  # exclusion wins over re-running the same subject
    assert outcome.approved == [("02", "predict")]
    assert excluded_subjects(None) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("subject,stage,decision\n01,predict,maybe\n", "row 2: decision 'maybe'"),
        ("subject,stage,decision\nDOE JANE,predict,ok\n", "row 2: subject 'DOE JANE'"),
        ("subject,stage,decision\n01,predict,ok\n01,predict,redo\n", "row 3: conflicting decisions"),
        ("subject,stage\n01,predict\n", "lacks column(s) ['decision']"),
    ],
)
def test_bad_signoff_is_refused_with_row_and_value(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "signoff.csv"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        read_signoff(path)
    assert str(path) in str(info.value)


def test_missing_signoff_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"review\.signoff"):
        read_signoff(tmp_path / "absent.csv")


def test_unreadable_record_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "sub-01_uncertainty.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="cannot read review record") as info:
        write_flagged_cases([bad], tmp_path / "f.tsv")
    assert "sub-01_uncertainty.json" in str(info.value)


def test_uncertainty_record_written_by_predict_is_listed_with_its_reasons(tmp_path: Path) -> None:
    """The record predict writes (segment.infer.uncertainty_summary + the shared writer) is what review reads."""
    fg = np.zeros((6, 6, 6), bool)
    fg[2:4, 2:4, 2:4] = True
    vague = np.full((2, 6, 6, 6), 0.5, np.float32)
    vague[1][fg], vague[0][fg] = 0.55, 0.45  # barely foreground: high entropy, members disagree
    certain = np.stack([~fg, fg]).astype(np.float32)
    infer = {"uncertainty_threshold": 0.35, "min_agreement": 0.8}
    paths = []
    for subject, probs, members in (("05", vague, [fg, np.zeros_like(fg)]), ("06", certain, [fg, fg])):
        _, record = uncertainty_summary(probs, members, infer, (1.0, 1.0, 1.0), subject=subject)
        paths.append(write_uncertainty(record, uncertainty_path(tmp_path / "results", subject)))
    cases = flagged_cases(paths)
    assert [(c.subject, c.stage) for c in cases] == [("05", "predict")]
    assert (
        cases[0].reason.startswith("mean uncertainty 0.9")
        and "ensemble agreement (Dice) 0.500 < 0.8" in cases[0].reason
    )
    assert cases[0].threshold == 0.35 and cases[0].score is not None and cases[0].score > 0.9
    write_flagged_cases(paths, tmp_path / "flagged.tsv")
    table = pd.read_csv(tmp_path / "flagged.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert table["subject"].tolist() == ["05"] and table["stage"].tolist() == ["predict"]
    assert table["reason"].tolist() == [cases[0].reason] and float(table["threshold"][0]) == 0.35
    # rerun_targets finds the record where predict writes it
    signoff = tmp_path / "signoff.tsv"
    signoff.write_text("subject\tstage\tdecision\n05\tpredict\tredo\n")
    assert rerun_targets(signoff, tmp_path / "results") == [paths[0]]
