"""De-identification of everything the convert stage writes.

dcm2niix runs with ``-ba y`` (anonymised BIDS sidecar); on top of that medpipe

* removes sidecar fields that identify a patient, an institution, a person or a date
  (:data:`DENY_FIELDS`) and every field copied from an attribute of the DICOM PS3.15 basic confidentiality
  profile (descriptions, protocol names, times, device, station:
  :func:`medpipe.core.confidentiality.profile_keywords`),
* removes any sidecar string that contains a value of an identifying DICOM attribute of the
  converted series (e.g. a SeriesDescription that repeats the patient ID),
* writes NIfTI images with blank header text (``medpipe.core.io.save_nifti``),
* and writes a de-identification table that lists *which* tags and fields were dropped, never
  their values.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from medpipe.core.confidentiality import profile_keywords
from medpipe.core.io import atomic_path

logger = logging.getLogger(__name__)

#: DICOM attributes whose values identify a patient, a person, an institution or a visit.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "OperatorsName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ScheduledPerformingPhysicianName",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "AdmissionID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AcquisitionDateTime",
    "PatientComments",
    "ImageComments",
    "AdditionalPatientHistory",
    "ContentCreatorName",
)

#: Identifying attributes whose values are searched for in any text medpipe writes.
_PHI_VALUE_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "OperatorsName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "MedicalRecordLocator",
    "AdmissionID",
    "StudyID",
    "StationName",
    "DeviceSerialNumber",
)

#: BIDS sidecar fields never carried into medpipe's sidecar (dcm2niix ``-ba y`` removes most already).
DENY_FIELDS: frozenset[str] = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "PatientWeight",
        "PatientSize",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "OperatorsName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "PhysiciansOfRecord",
        "RequestingPhysician",
        "AcquisitionDateTime",
        "AcquisitionDate",
        "StudyDate",
        "SeriesDate",
        "ContentDate",
        "ImageComments",
        "PatientComments",
        "ProcedureStepDescription",
        "StudyDescription",
        "ReferringPhysician",
    }
)

#: Placeholder values that are not identifying and must not trigger redaction.
_PLACEHOLDERS = frozenset({"", "NONE", "UNKNOWN", "ANONYMOUS", "ANON", "N/A", "NA", "NULL", "REMOVED", "DEIDENTIFIED"})
_MIN_PHI_LEN = 3
#: Words of non-name identifying values (institution, address) searched on their own from this length.
_MIN_WORD_LEN = 6
REDACTED = "<redacted>"


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, Dataset):
        return [s for elem in value for s in _strings(elem.value)]
    if isinstance(value, list | tuple) or type(value).__name__ in ("MultiValue", "Sequence"):
        return [s for v in value for s in _strings(v)]
    text = str(value).strip()
    return [text] if text else []


def phi_values(headers: Iterable[Dataset]) -> list[str]:
    """Identifying strings found in ``headers`` (names also split into their components).

    They are used only in memory, to redact text before it is written; never logged.
    """
    found: set[str] = set()
    for ds in headers:
        for keyword in _PHI_VALUE_KEYWORDS:
            elem = ds.get(keyword)
            person = keyword.endswith("Name") and keyword not in ("InstitutionName", "StationName")
            for text in _strings(elem):
                # person names: every component; other values: the whole value and its long words
                parts = re.split(r"[\^=\s,]+", text)
                candidates = {text, *(p for p in parts if person or len(p) >= _MIN_WORD_LEN)}
                for part in candidates:
                    part = part.strip()
                    if len(part) >= _MIN_PHI_LEN and part.upper() not in _PLACEHOLDERS:
                        found.add(part)
    return sorted(found, key=lambda s: (-len(s), s))


def contains_phi(text: str, phi: Sequence[str]) -> bool:
    """True when ``text`` contains any of the identifying strings (case-insensitive)."""
    low = text.lower()
    return any(value.lower() in low for value in phi)


def redact(text: str, phi: Sequence[str]) -> str:
    """``text`` with every identifying string replaced by ``<redacted>``."""
    for value in phi:
        text = re.sub(re.escape(value), REDACTED, text, flags=re.IGNORECASE)
    return text


def scrub_bids(bids: Mapping[str, Any], phi: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Remove identifying fields from a dcm2niix BIDS sidecar.

    Returns
    -------
    clean
        The sidecar without denied fields and without any field whose text holds a PHI value.
    removed
        One row per removed field (``source``, ``tag``, ``keyword``, ``action``, ``reason``); no values.
    """
    clean: dict[str, Any] = {}
    removed: list[dict[str, str]] = []
    for key in sorted(bids):
        value = bids[key]
        if key in DENY_FIELDS:
            removed.append(_row("bids_sidecar", "", key, "removed", "identifying field"))
        elif key in profile_keywords():
            removed.append(_row("bids_sidecar", "", key, "removed", "attribute of the PS3.15 basic profile"))
        elif any(contains_phi(s, phi) for s in _strings(value)):
            removed.append(_row("bids_sidecar", "", key, "removed", "contains an identifying value"))
        else:
            clean[key] = value
    return clean, removed


def _row(source: str, tag: str, keyword: str, action: str, reason: str) -> dict[str, str]:
    return {"source": source, "tag": tag, "keyword": keyword, "action": action, "reason": reason}


def dicom_rows(headers: Sequence[Dataset]) -> list[dict[str, str]]:
    """Rows for the identifying DICOM attributes present in the series (none is carried over)."""
    rows = []
    for keyword in IDENTIFYING_KEYWORDS:
        if any(_strings(ds.get(keyword)) for ds in headers):
            tag = tag_for_keyword(keyword)
            tag_text = "" if tag is None else f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
            rows.append(_row("dicom", tag_text, keyword, "dropped", "identifying attribute; not written to outputs"))
    n_private = sum(1 for ds in headers[:1] for elem in ds if elem.tag.is_private)
    if n_private:
        rows.append(
            _row(
                "dicom",
                "private",
                f"{n_private} private elements",
                "dropped",
                "private tags are not written to outputs",
            )
        )
    return rows


def header_rows() -> list[dict[str, str]]:
    """Rows for the NIfTI header text fields that medpipe blanks on every write."""
    return [
        _row("nifti_header", "", f, "blanked", "free text") for f in ("descrip", "aux_file", "intent_name", "db_name")
    ]


def write_deid_table(rows: Sequence[Mapping[str, str]], path: str | Path) -> Path:
    """Write the de-identification table (TSV), atomically and in a stable order."""
    path = Path(path)
    fields = ["source", "tag", "keyword", "action", "reason"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})
    return path
