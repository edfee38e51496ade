"""DICOM PS3.15 Basic Application Level Confidentiality Profile: for the DICOM objects medpipe writes, and the
list of the profile's attributes that no text output may carry (:func:`profile_keywords`, used by the convert
stage's sidecar scrubbing).

The action of every attribute (D replace, Z empty, X remove, U replace UID, and the combined X/Z/D, X/Z/U*
actions) comes from the tables of the standard as dicom-anonymizer ships them (:data:`PROFILE_TABLE`); they are
applied to the dataset **and to every item of every nested sequence** (a Segmentation inherits the source's
acquisition equipment inside Contributing Equipment Sequence, for instance), and private attributes are removed
everywhere.

What is kept, and why (the links a DICOM-SEG needs to be re-attached to its study):

* **Retain UIDs Option** (PS3.15 E.3.9): Study, Series, SOP Instance and Frame of Reference UIDs, the referenced
  instance and series UIDs, and the Segmentation's own UIDs (derived deterministically from the source series, so
  re-runs write the same bytes) stay as they are: without them no viewer can overlay the segmentation on the
  series it describes. A site that must not keep them pseudonymises the source series first.
* **Patient ID and Name** become the subject ID of the subject sheet (the pseudonym every medpipe output uses).

The object then says so: Patient Identity Removed ``YES``, De-identification Method and its code sequence
(DCM 113100 Basic Application Confidentiality Profile, DCM 113110 Retain UIDs Option).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from importlib.metadata import version
from typing import Any

import pydicom
from pydicom.sr.codedict import codes

logger = logging.getLogger(__name__)

#: dicom-anonymizer's edition of PS3.15 Table E.1-1.
PROFILE_TABLE = "dicomfields_2026c"
#: Value of De-identification Method (0012,0063).
METHOD = "DICOM PS3.15 Basic Application Level Confidentiality Profile, Retain UIDs Option (medpipe)"

Action = Callable[[pydicom.Dataset, Any], None]


def _keep(dataset: pydicom.Dataset, tag: Any) -> None:
    """K: the attribute stays (a sequence's items are still cleaned by the recursion)."""


def profile_actions() -> dict[tuple[int, ...], Action]:
    """Tag -> action of the basic profile with the Retain UIDs Option (U and X/Z/U* become keep).

    Returns
    -------
    dict
        Keys are ``(group, element)`` tags or ``(group, element, group_mask, element_mask)`` repeating groups.
    """
    from dicomanonymizer import simpledicomanonymizer as sda
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    actions: dict[tuple[int, ...], Action] = sda.initialize_actions(PROFILE_TABLE)
    tables = dicom_anonymization_database_selector(PROFILE_TABLE)
    for tag in (*tables["U_TAGS"], *tables["X_Z_U_STAR_TAGS"]):
        actions[tag] = _keep
    return actions


@cache
def profile_tags() -> tuple[tuple[int, int], ...]:
    """``(group, element)`` of every single attribute in the basic profile's table, sorted (repeating groups and
    the command / file-meta groups 0000 and 0002 left out)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    tags = dicom_anonymization_database_selector(PROFILE_TABLE)["ALL_TAGS"]
    return tuple(sorted({(t[0], t[1]) for t in tags if len(t) == 2 and t[0] not in (0x0000, 0x0002)}))


@cache
def profile_keywords() -> frozenset[str]:
    """DICOM keywords of every single attribute in the basic profile's table (repeating groups left out).

    These are also the names dcm2niix gives the BIDS sidecar fields copied from those attributes.
    """
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from pydicom.datadict import keyword_for_tag

    tags = dicom_anonymization_database_selector(PROFILE_TABLE)["ALL_TAGS"]
    return frozenset(k for t in tags if len(t) == 2 and (k := keyword_for_tag((t[0] << 16) | t[1])))


def _nested(dataset: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Every item of every sequence of ``dataset``, at any depth."""
    items: list[pydicom.Dataset] = []
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                items += [item, *_nested(item)]
    return items


def apply_basic_profile(ds: pydicom.Dataset, *, subject: str) -> int:
    """De-identify ``ds`` in place by the basic profile (Retain UIDs Option); Patient ID and Name := ``subject``.

    Parameters
    ----------
    ds
        The dataset to write (a Segmentation built from a source series).
    subject
        Subject ID of the subject sheet.

    Returns
    -------
    int
        Number of datasets cleaned (the root and every nested item).
    """
    from dicomanonymizer import simpledicomanonymizer as sda

    actions = profile_actions()
    datasets = [ds, *_nested(ds)]
    for item in datasets:
        sda.anonymize_dataset(item, None, delete_private_tags=True, base_rules_gen=lambda: dict(actions))
    ds.PatientName = subject
    ds.PatientID = subject
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    method_codes = []
    for code in (codes.DCM.BasicApplicationConfidentialityProfile, codes.DCM.RetainUidsOption):
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
        method_codes.append(item)
    ds.DeidentificationMethodCodeSequence = method_codes
    logger.debug("basic confidentiality profile applied to %d datasets", len(datasets))
    return len(datasets)


def profile_record() -> dict[str, str]:
    """What the sidecar of a de-identified object records about the profile that ran."""
    return {"profile": METHOD, "table": PROFILE_TABLE, "dicom-anonymizer": version("dicom-anonymizer")}
