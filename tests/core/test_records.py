"""Per-case records shared between stages: the uncertainty record round-trips through its JSON file, and the
modality record of a converted image is read back from its sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.records import (
    ModalityRecord,
    UncertaintyRecord,
    declared_modality,
    is_uncertainty_record,
    read_modality,
    read_uncertainty,
    subject_from_name,
    uncertainty_path,
    write_uncertainty,
)
from medpipe.core.sidecar import write_sidecar

RECORD = UncertaintyRecord(
    subject="07",
    score=0.412345,
    threshold=0.35,
    flag=True,
    reasons=("mean uncertainty 0.412 > 0.35", "ensemble agreement (Dice) 0.700 < 0.8"),
    agreement=0.7,
    min_agreement=0.8,
    n_members=8,
    predicted_volume_mm3=5123.5,
)


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    path = uncertainty_path(tmp_path / "results", "07")
    assert path == tmp_path / "results/predict/sub-07/sub-07_uncertainty.json"
    assert is_uncertainty_record(path) and not is_uncertainty_record(path.with_name("sub-07_qc.json"))
    write_uncertainty(RECORD, path)
    assert read_uncertainty(path) == RECORD
    assert UncertaintyRecord.from_json(json.loads(json.dumps(RECORD.to_json()))) == RECORD
    on_disk = json.loads(path.read_text())
    assert on_disk["flag"] is True and on_disk["reasons"] == list(RECORD.reasons) and on_disk["score"] == 0.412345
    assert set(on_disk) == {
        "subject",
        "score",
        "threshold",
        "flag",
        "reasons",
        "agreement",
        "min_agreement",
        "n_members",
        "predicted_volume_mm3",
    }
    assert RECORD.reason == "mean uncertainty 0.412 > 0.35; ensemble agreement (Dice) 0.700 < 0.8"


def test_minimal_record_takes_the_subject_from_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "sub-A1_uncertainty.json"
    path.write_text('{"score": 0.1, "threshold": 0.2, "flag": false}')
    record = read_uncertainty(path)
    assert record == UncertaintyRecord("A1", 0.1, 0.2, False)
    assert record.reasons == () and record.agreement is None and record.reason == ""
    assert subject_from_name("sub-B2_uncertainty.json") == "B2" and subject_from_name("x.json") is None


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ('{"subject": "01", "flag_for_review": true, "uncertainty_score": 0.5}', "score, threshold, flag"),
        ('{"subject": "01", "score": 0.5, "threshold": 0.2, "flag": "yes"}', "flag"),
        ('{"subject": "01", "score": 0.5, "threshold": 0.2, "flag": true, "reasons": "x"}', "reasons"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_malformed_record_is_refused_with_the_file(tmp_path: Path, body: str, missing: str) -> None:
    path = tmp_path / "sub-01_uncertainty.json"
    path.write_text(body)
    with pytest.raises(DataError, match=missing) as info:
        read_uncertainty(path)
    assert str(path) in str(info.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sub-01_uncertainty.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read uncertainty record") as info:
        read_uncertainty(path)
    assert str(path) in str(info.value)


def test_modality_record_round_trips_through_a_sidecar(tmp_path: Path) -> None:
    image = tmp_path / "sub-01_CT.nii.gz"
    image.write_bytes(b"")
    write_sidecar(image, stage="convert", subject="01", extra=ModalityRecord("CT", "dicom_header").to_json())
    assert read_modality(image) == ModalityRecord("CT", "dicom_header")
    assert read_modality(tmp_path / "sub-01_CT.json") == ModalityRecord("CT", "dicom_header")
    default = declared_modality(None, sequence="T1w")
    write_sidecar(image, stage="convert", subject="01", extra=default.to_json())
    assert read_modality(image) == default and default.modality == "MR" and default.source == "default"
    assert "sequences.T1w.modality" in default.note and "assumed MR" in default.note


def test_old_sidecar_without_modality_says_to_rerun_convert(tmp_path: Path) -> None:
    image = tmp_path / "sub-01_T1w.nii.gz"
    write_sidecar(image, stage="convert", subject="01")
    with pytest.raises(DataError, match=r"subject 01.*records no modality.*re-run the convert stage"):
        read_modality(image, subject="01")


def test_declared_modality_of_a_nifti_input() -> None:
    assert declared_modality("pt", sequence="PET") == ModalityRecord("PT", "config")
    assert declared_modality(["CT"], sequence="CT") == ModalityRecord("CT", "config")
    for bad in (["MR", "CT"], "US"):
        with pytest.raises(ConfigError, match=r"sequences.X.modality: a NIfTI input needs exactly one of"):
            declared_modality(bad, sequence="X")
