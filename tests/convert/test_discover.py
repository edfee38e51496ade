"""Series discovery, grouping and selection on synthetic DICOM folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from medpipe.convert.discover import group_series, parse_selector, scan_dicom_folder, select_series
from medpipe.core.config import section_schema
from medpipe.core.errors import ConfigError, DicomError


def _groups(folder: Path, **kw):
    return group_series(scan_dicom_folder(folder, subject="S01"), **kw)


def test_scan_skips_non_dicom_and_groups_by_series(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path / "a" / "deep", n_slices=4, seed=1, prefix="t1", tags={"SeriesDescription": "T1w"})
    series_factory(tmp_path / "b", n_slices=5, seed=2, prefix="t2", tags={"SeriesDescription": "T2w"})
    (tmp_path / "README.txt").write_text("not dicom\n")
    groups = _groups(tmp_path)
    assert sorted(len(g.instances) for g in groups) == [4, 5]
    chosen = select_series(
        groups, parse_selector({"series_description": "^T2w"}, sequence="T2w"), subject="S01", sequence="T2w"
    )
    assert len(chosen.instances) == 5
    assert [int(i.get("InstanceNumber")) for i in chosen.instances] == [1, 2, 3, 4, 5]


def test_one_uid_split_by_echo_and_selected_by_echo_number(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path, n_slices=4, prefix="e1", series_uid="1.2.3.4", tags={"EchoNumbers": 1})
    series_factory(tmp_path, n_slices=4, prefix="e2", series_uid="1.2.3.4", tags={"EchoNumbers": 2})
    groups = _groups(tmp_path)
    assert [g.split for g in groups] == [{"echo": "1"}, {"echo": "2"}]
    with pytest.raises(DicomError, match=r"2 series match .*echo_number"):
        select_series(groups, parse_selector({}, sequence="T1w"), subject="S01", sequence="T1w")
    chosen = select_series(groups, parse_selector({"echo_number": 2}, sequence="T1w"), subject="S01", sequence="T1w")
    assert chosen.split == {"echo": "2"}


def test_complete_acquisitions_split_unless_4d(tmp_path: Path, series_factory) -> None:
    for acq in (1, 2):
        series_factory(
            tmp_path,
            n_slices=4,
            prefix=f"a{acq}",
            seed=acq,
            series_uid="1.2.3.5",
            tags={"AcquisitionNumber": acq},
        )
    assert [g.split.get("acquisition") for g in _groups(tmp_path)] == ["1", "2"]
    assert len(_groups(tmp_path, allow_4d=True)) == 1


def test_localizer_excluded_and_no_match_lists_candidates(tmp_path: Path, series_factory) -> None:
    series_factory(
        tmp_path,
        n_slices=3,
        prefix="loc",
        seed=3,
        tags={"SeriesDescription": "T1w_loc", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    series_factory(tmp_path, n_slices=6, prefix="t1", seed=4, tags={"SeriesDescription": "T1w_axial"})
    groups = _groups(tmp_path)
    chosen = select_series(
        groups, parse_selector({"series_description": "^T1w"}, sequence="T1w"), subject="S01", sequence="T1w"
    )
    assert len(chosen.instances) == 6
    with pytest.raises(DicomError, match=r"subject S01.*sequence FLAIR: no series matches .*T1w_axial"):
        select_series(
            groups,
            parse_selector({"series_description": "FLAIR"}, sequence="FLAIR"),
            subject="S01",
            sequence="FLAIR",
        )


def test_selector_validation() -> None:
    with pytest.raises(ConfigError, match="unknown selector key"):
        parse_selector({"series_descr": "x"}, sequence="T1w")
    with pytest.raises(ConfigError, match="regular expression"):
        parse_selector({"series_description": "("}, sequence="T1w")
    assert parse_selector({"modality": "MR"}, sequence="T1w").modality == ("MR",)
    # Values the workflow's schema refuses are refused here too, naming the sequence and the key.
    for bad in ({"modality": "mr"}, {"gantry_tilt": "ignore"}, {"min_slices": 0}):
        with pytest.raises(ConfigError, match=rf"sequences\.T1w\.{next(iter(bad))}: "):
            parse_selector(bad, sequence="T1w")
    # Defaults are the schema's.
    sel = parse_selector({}, sequence="T1w")
    schema = section_schema("sequences", "*")["properties"]
    assert sel.as_dict() == {k: schema[k]["default"] for k in sel.as_dict()}


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DicomError, match="not found"):
        scan_dicom_folder(tmp_path / "nope", subject="S01")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DicomError, match="no DICOM files"):
        scan_dicom_folder(tmp_path, subject="S01")
