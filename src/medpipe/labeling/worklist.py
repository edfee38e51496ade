"""The worklist of a round: what a corrector opens, edits and returns.

``results/labeling/round-<r>/worklist.tsv`` (:func:`write_worklist`; :data:`WORKLIST_COLUMNS`) has one row per
selected subject: the image to open, the predicted mask to edit (NIfTI label map on the image's grid, which 3D
Slicer and ITK-SNAP open as a segmentation of that image), the DICOM-SEG of the same mask where the subject has
DICOM, the file the corrected mask must be saved as, the uncertainty and the reason it was selected, and an empty
``correction_minutes`` column. A corrector who fills that column returns the worklist into the round's
corrections folder (:func:`read_minutes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from medpipe.core.errors import DataError
from medpipe.core.io import read_tsv, write_tsv

logger = logging.getLogger(__name__)

WORKLIST_COLUMNS = [
    "subject",
    "rank",
    "uncertainty",
    "reason",
    "image",
    "mask_to_edit",
    "dicom_seg",
    "save_correction_as",
    "correction_minutes",
]


def write_worklist(
    selection: str | Path,
    out_tsv: str | Path,
    *,
    images: Mapping[str, str],
    masks: Mapping[str, str],
    dicom_segs: Mapping[str, str],
    corrections: Mapping[str, str],
) -> Path:
    """Write the worklist of the subjects selected in ``selection``.

    Parameters
    ----------
    selection
        The round's selection record (:mod:`medpipe.labeling.select`).
    out_tsv
        ``worklist.tsv``.
    images, masks, dicom_segs, corrections
        Per selected subject: image to open, predicted mask to edit, its DICOM-SEG (absent: no DICOM) and the
        path the corrected mask is expected at.

    Raises
    ------
    DataError
        A selected subject has no image, mask or correction path.
    """
    table = read_tsv(selection, dtype={"subject": str, "reason": str})
    table = table[table["selected"].astype(str).str.lower() == "true"]
    rows = []
    for _, row in table.iterrows():
        s = str(row["subject"])
        if s not in images or s not in masks or s not in corrections:
            raise DataError("selected for correction but no image, mask or correction path was given", subject=s)
        rows.append(
            {
                "subject": s,
                "rank": int(row["rank"]),
                "uncertainty": row["score"],
                "reason": row["reason"],
                "image": images[s],
                "mask_to_edit": masks[s],
                "dicom_seg": dicom_segs.get(s, ""),
                "save_correction_as": corrections[s],
                "correction_minutes": "",
            }
        )
    logger.info("worklist: %d subjects to correct -> %s", len(rows), out_tsv)
    return write_tsv(pd.DataFrame(rows, columns=WORKLIST_COLUMNS), out_tsv)


def read_minutes(path: str | Path | None, batch: Sequence[str]) -> dict[str, float]:
    """Correction minutes per subject from a returned worklist (none when ``path`` is absent).

    Raises
    ------
    DataError
        The column is missing, a value is not a non-negative number, or a subject is not in the batch.
    """
    if path is None or not Path(path).is_file():
        return {}
    table = read_tsv(path, dtype={"subject": str, "correction_minutes": str})
    if "subject" not in table.columns or "correction_minutes" not in table.columns:
        raise DataError("returned worklist lacks the subject or correction_minutes column", path=path)
    minutes: dict[str, float] = {}
    for s, value in zip(table["subject"], table["correction_minutes"], strict=True):
        if s not in batch:
            raise DataError(f"returned worklist names a subject outside the batch {list(batch)}", subject=s, path=path)
        if pd.isna(value) or str(value).strip() == "":
            continue
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number >= 0:
            raise DataError(f"correction_minutes {value!r} is not a non-negative number", subject=s, path=path)
        minutes[str(s)] = number
    return minutes
