"""Refusal rules on synthetic series: tilt, spacing, missing slices, single slice, orientation, 4D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medpipe.convert.checks import check_dcm2niix_messages, check_series_geometry
from medpipe.convert.discover import group_series, parse_selector, scan_dicom_folder
from medpipe.core.errors import DicomError


def _check(folder: Path, **selector):
    groups = group_series(scan_dicom_folder(folder, subject="S01"), allow_4d=bool(selector.get("allow_4d")))
    assert len(groups) == 1
    return check_series_geometry(groups[0], parse_selector(selector, sequence="T1w"), subject="S01", sequence="T1w")


def test_regular_series_accepted(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path, n_slices=6, slice_gap=2.5)
    layout = _check(tmp_path)
    assert (layout.n_slices, layout.n_volumes) == (6, 1)
    assert layout.slice_spacing_mm == pytest.approx(2.5) and layout.tilt_deg < 1e-6


def test_oblique_untilted_series_accepted(tmp_path: Path, series_factory) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    series_factory(tmp_path, n_slices=5, iop=(1, 0, 0, 0, c, s))
    assert _check(tmp_path).tilt_deg < 1e-3


def test_gantry_tilt_refused(tmp_path: Path, series_factory) -> None:
    c, s = np.cos(np.radians(12)), np.sin(np.radians(12))
    series_factory(tmp_path, n_slices=5, iop=(1, 0, 0, 0, c, -s), positions=[(0, 0, 3.0 * k) for k in range(5)])
    with pytest.raises(DicomError, match=r"subject S01.*series 3 .*gantry tilt of 12\.00 degrees"):
        _check(tmp_path)


def test_missing_slice_and_irregular_spacing_refused(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path / "gap", n_slices=5, positions=[(0, 0, z) for z in (0, 2, 4, 8, 10)])
    with pytest.raises(DicomError, match=r"missing slices: 1 slice\(s\) missing"):
        _check(tmp_path / "gap")
    series_factory(tmp_path / "irr", n_slices=5, positions=[(0, 0, z) for z in (0, 2, 4, 7, 9)])
    with pytest.raises(DicomError, match=r"inconsistent slice spacing \(gaps 2, 2, 3, 2 mm") as err:
        _check(tmp_path / "irr")
    assert "missing" not in str(err.value)


def test_single_slice_and_stacked_duplicates_refused(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path / "one", n_slices=1)
    with pytest.raises(DicomError, match="single slice: a volume is required"):
        _check(tmp_path / "one")
    series_factory(tmp_path / "dup", n_slices=3, positions=[(0, 0, 0)] * 3)
    with pytest.raises(DicomError, match="not a volume: all 3 images lie at one slice position"):
        _check(tmp_path / "dup")


def test_4d_needs_allow_4d(tmp_path: Path, series_factory) -> None:
    series_factory(tmp_path, n_slices=6, positions=[(0, 0, 2.0 * (k % 3)) for k in range(6)])
    with pytest.raises(DicomError, match=r"2 volumes at the same 3 slice positions \(4D\)"):
        _check(tmp_path)
    assert _check(tmp_path, allow_4d=True).n_volumes == 2


def test_dcm2niix_messages() -> None:
    text = (
        "Chris Rorden's dcm2niiX\nWarning: Patient Position (0018,5100) not specified\n"
        "Warning: Interslice distance varies in this volume (incompatible with NIfTI format).\n"
    )
    with pytest.raises(DicomError, match=r"inconsistent slice spacing \(dcm2niix: Warning: Interslice"):
        check_dcm2niix_messages(text, subject="S01", sequence="T1w", label="series 1")
    ok = check_dcm2niix_messages(text.splitlines()[1], subject="S01", sequence="T1w", label="series 1")
    assert ok == ["Warning: Patient Position (0018,5100) not specified"]
