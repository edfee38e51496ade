"""`medpipe sheet`: one row per subject folder, IDs sanitised, missing files skipped loudly, collisions refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from medpipe.cli import main
from medpipe.convert.sheet import make_subject_sheet, subject_id
from medpipe.core.config import load_subject_sheet
from medpipe.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path, folders: dict[str, list[str]]) -> None:
    for name, files in folders.items():
        (root / name).mkdir(parents=True)
        for f in files:
            (root / name / f).write_bytes(b"")


def test_rows_ids_labels_and_skips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tree(
        tmp_path / "root",
        {"STS_002": ["img.nii.gz", "mask.nii.gz"], "STS_001": ["img.nii.gz"], "STS_009": ["other.nii.gz"]},
    )
    caplog.set_level(logging.WARNING)
    out = make_subject_sheet(tmp_path / "root", tmp_path / "s.tsv", label="mask.nii.gz", require=["img.nii.gz"])
    sheet = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert list(sheet["subject"]) == ["STS001", "STS002"]
    assert sheet.loc[1, "label"] == str((tmp_path / "root/STS_002/mask.nii.gz").resolve())
    assert sheet.loc[0, "label"] == ""
    assert "skipping STS_009: no img.nii.gz" in caplog.text and "without mask.nii.gz: STS001" in caplog.text
    # the sheet passes the pipeline's own validation
    table = load_subject_sheet(out, REPO / "config/schemas/subjects.schema.yaml", required_files=["img.nii.gz"])
    assert list(table.index) == ["STS001", "STS002"]


def test_collisions_and_empty_roots_are_refused(tmp_path: Path) -> None:
    assert subject_id("P-01 (left)") == "P01left"
    _tree(tmp_path / "a", {"P_1": [], "P-1": []})
    with pytest.raises(ConfigError, match=r"both map to subject ID 'P1'"):
        make_subject_sheet(tmp_path / "a", tmp_path / "s.tsv")
    _tree(tmp_path / "b", {"X1": []})
    with pytest.raises(ConfigError, match=r"no subject folder with img.nii.gz found"):
        make_subject_sheet(tmp_path / "b", tmp_path / "s.tsv", require=["img.nii.gz"])
    with pytest.raises(ConfigError, match="subject root folder not found"):
        make_subject_sheet(tmp_path / "missing", tmp_path / "s.tsv")


def test_cli(tmp_path: Path) -> None:
    _tree(tmp_path / "root", {"A_1": ["i.nii"]})
    assert main(["sheet", str(tmp_path / "root"), "--require", "i.nii", "--out", str(tmp_path / "s.tsv")]) == 0
    assert (tmp_path / "s.tsv").read_text().splitlines()[1].startswith("A1\t")
    assert main(["sheet", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t.tsv")]) == 2
