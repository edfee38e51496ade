"""De-identification helpers."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from medpipe.convert.deid import dicom_rows, phi_values, redact, scrub_bids, write_deid_table


def _header() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^John"
    ds.PatientID = "PID12345"
    ds.InstitutionName = "NONE"
    ds.InstitutionalDepartmentName = "Radiology Dept X"
    ds.SeriesDescription = "T1w"
    return ds


def test_phi_values_split_names_and_skip_placeholders() -> None:
    values = phi_values([_header()])
    assert {"Doe^John", "Doe", "John", "PID12345", "Radiology Dept X"} <= set(values)
    assert "NONE" not in values and "X" not in values


def test_scrub_bids_drops_denied_and_phi_bearing_fields() -> None:
    phi = phi_values([_header()])
    bids = {
        "SequenceName": "tfl3d john",
        "InstitutionName": "x",
        "ImageType": ["ORIGINAL", "NONE"],
        "RepetitionTime": 2.0,
        "ProtocolName": "t1_mprage",
        "SeriesDescription": "T1w",
    }
    clean, removed = scrub_bids(bids, phi)
    assert clean == {"ImageType": ["ORIGINAL", "NONE"], "RepetitionTime": 2.0}
    assert {(r["keyword"], r["reason"]) for r in removed} == {
        ("SequenceName", "contains an identifying value"),
        ("InstitutionName", "identifying field"),
        ("ProtocolName", "attribute of the PS3.15 basic profile"),  # free text that may hold anything
        ("SeriesDescription", "attribute of the PS3.15 basic profile"),
    }


def test_redact_and_table_holds_no_values(tmp_path: Path) -> None:
    phi = phi_values([_header()])
    assert redact("scan of DOE^JOHN id pid12345", phi) == "scan of <redacted> id <redacted>"
    out = write_deid_table(dicom_rows([_header()]), tmp_path / "deid.tsv")
    text = out.read_text()
    assert "PatientName" in text and "(0010,0010)" in text
    assert "Doe" not in text and "PID12345" not in text
