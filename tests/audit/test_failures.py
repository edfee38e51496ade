"""Tests of medpipe.audit.failures: failed jobs from a Snakemake log to a sign-off sheet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medpipe.audit.failures import failed_jobs, failure_reason, redact_paths, write_failures
from medpipe.audit.review import excluded_subjects

EXPORT = "/data/export/DOE_JOHN"  # a hospital export folder named after the patient

SNAKEMAKE_LOG = f"""Building DAG of jobs...
[Tue Dec  1 12:00:00 2026]
rule convert_sequence:
    input: {EXPORT}
    output: results/convert/sub-P01/sub-P01_T1w.nii.gz
Error in rule convert_sequence:
    jobid: 5
    input: {EXPORT}
    output: results/convert/sub-P01/sub-P01_T1w.nii.gz
    log: logs/convert_sequence/sub-P01_T1w.log (check log file(s) for error details)
    wildcards: subject=P01, sequence=T1w
Error in group preprocess:
    jobs:
        rule convert_sequence:
            jobid: 5
            log: logs/convert_sequence/sub-P01_T1w.log (check log file(s) for error details)
        rule n4:
            jobid: 9
            log: logs/n4/sub-P02_T2w.log (check log file(s) for error details)
Error in rule train:
    jobid: 12
    log: logs/train/fold-0.log (check log file(s) for error details)
Shutting down, this might take some time.
"""


def _workdir(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    (logs / "convert_sequence").mkdir(parents=True)
    (logs / "n4").mkdir()
    (logs / "train").mkdir()
    (logs / "convert_sequence" / "sub-P01_T1w.log").write_text(
        "2026-12-01 INFO medpipe.convert: 12 files\n"
        f"2026-12-01 ERROR medpipe.script: failed: subject P01, file {EXPORT}/IM0001.dcm: truncated\n"
        "Traceback (most recent call last):\n  File ...\n"
        f"medpipe.core.errors.DicomError: subject P01, series 1.2.3, file {EXPORT}/IM0001.dcm: truncated\n"
    )
    (logs / "n4" / "sub-P02_T2w.log").write_text("N4 started\nKilled\n")
    (tmp_path / "snakemake.log").write_text(SNAKEMAKE_LOG)
    return tmp_path


def test_reason_is_the_last_error_line_else_the_last_line(tmp_path: Path) -> None:
    wd = _workdir(tmp_path)
    assert failure_reason(wd / "logs/convert_sequence/sub-P01_T1w.log").startswith("DicomError: subject P01")
    assert failure_reason(wd / "logs/n4/sub-P02_T2w.log") == "Killed"
    assert failure_reason(wd / "logs/none.log").startswith("no log written")


def test_every_failed_job_once_with_rule_subject_and_log(tmp_path: Path) -> None:
    wd = _workdir(tmp_path)
    jobs = failed_jobs(wd / "snakemake.log", wd)
    assert [(j.rule, j.subject, j.log) for j in jobs] == [
        ("convert_sequence", "P01", "logs/convert_sequence/sub-P01_T1w.log"),
        ("n4", "P02", "logs/n4/sub-P02_T2w.log"),
        ("train", None, "logs/train/fold-0.log"),
    ]


def test_paths_of_the_subject_sheet_are_redacted(tmp_path: Path) -> None:
    text = f"file {EXPORT}/sub dir/IM0001.dcm and {tmp_path}/labels/DOE_JOHN_RS.dcm, other /tmp/x.dcm"
    out = redact_paths(text, [EXPORT, "labels/DOE_JOHN_RS.dcm", ""], tmp_path)
    assert "DOE_JOHN" not in out
    assert out == "file <subject-sheet path> dir/IM0001.dcm and <subject-sheet path>, other /tmp/x.dcm"


def test_sheet_excludes_the_failed_subjects_and_holds_no_phi(tmp_path: Path) -> None:
    wd = _workdir(tmp_path)
    out = wd / "logs" / "failed_jobs.tsv"
    jobs = write_failures([str(wd / "snakemake.log")], out, wd, private_paths=[EXPORT])  # Snakemake 9: a list
    assert len(jobs) == 3
    table = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["subject", "stage", "decision", "comment", "rule", "log"]
    assert list(table["subject"]) == ["P01", "P02"]  # the cohort job (train) has no row
    assert (table["decision"] == "exclude").all()
    assert table.loc[0, "comment"].startswith("job convert_sequence failed: DicomError: subject P01")
    assert "DOE_JOHN" not in out.read_text()
    assert excluded_subjects(out) == ["P01", "P02"]  # usable as review.signoff as written


def test_no_log_writes_nothing(tmp_path: Path) -> None:
    assert write_failures(None, tmp_path / "f.tsv") == []
    assert write_failures(tmp_path / "missing.log", tmp_path / "f.tsv") == []
    assert write_failures([], tmp_path / "f.tsv") == []
    assert not (tmp_path / "f.tsv").exists()
