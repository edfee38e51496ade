"""Checking and accepting the corrected masks of a round.

A correction (``<corrections>/round-<r>/sub-<subject>_mask.nii.gz``, or in simulation mode the subject's known
label) is accepted by :func:`accept_correction` only when its subject was selected in that round, it lies on the
subject's reference grid (orientation, spacing, origin) and every voxel is a class of the model
(``0 .. segmentation.num_classes - 1``). The accepted mask is written under
``results/labeling/round-<r>/accepted/`` with a record (:data:`ACCEPTED_COLUMNS`: how much the corrector changed)
and becomes a label of round ``r + 1``. :func:`ingest_round` checks the round folder as a whole (no correction
of a subject outside the batch, none missing) and writes ``accepted.tsv``. Nothing is written when a check
fails, so the labels accepted before stay as they were.

The share of voxels changed is ``|prediction != correction| / |prediction foreground or correction
foreground|``: 0 when the corrector accepted the prediction as it was, 1 when no foreground voxel was kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.core.errors import DataError
from medpipe.core.geometry import check_same_grid, geometry_of
from medpipe.core.io import load_nifti, save_checked, write_tsv
from medpipe.core.sidecar import read_sidecar, sha256_file, write_sidecar
from medpipe.labeling.campaign import CORRECTION_NAME, RETURNED_WORKLIST
from medpipe.labeling.worklist import read_minutes

logger = logging.getLogger(__name__)

ACCEPTED_COLUMNS = [
    "subject",
    "correction",
    "sha256",
    "changed_voxels",
    "changed_share",
    "predicted_voxels",
    "corrected_voxels",
    "correction_minutes",
]
_CORRECTION = re.compile("^" + re.escape(CORRECTION_NAME).replace(r"\{subject\}", "(?P<subject>[A-Za-z0-9]+)") + "$")


def _label_values(data: np.ndarray, *, n_classes: int, subject: str, path: str | Path) -> np.ndarray:
    """The correction as integer class indices; refuse NaN, fractions and values outside the classes."""
    if not np.issubdtype(data.dtype, np.integer):
        bad = ~np.isfinite(data) | (data != np.round(data))
        if bad.any():
            example = float(data[bad].flat[0])
            raise DataError(
                f"correction holds {int(bad.sum())} non-integer voxels (e.g. {example:.6g}); save it as a label map",
                subject=subject,
                path=path,
            )
    values = np.unique(data)
    outside = [int(v) for v in values if not 0 <= v < n_classes]
    if outside:
        raise DataError(
            f"correction holds label values {outside} outside the classes 0..{n_classes - 1} of the model",
            subject=subject,
            path=path,
        )
    return data.astype(np.uint8)


def accept_correction(
    correction: str | Path,
    reference: str | Path,
    prediction: str | Path,
    out_mask: str | Path,
    *,
    subject: str,
    round_index: int,
    batch: Sequence[str],
    n_classes: int,
) -> Path:
    """Check one corrected mask and write it as an accepted label (with its record in the sidecar).

    Parameters
    ----------
    correction
        The corrected mask (NIfTI label map).
    reference
        The subject's converted reference image: the grid the correction must be on.
    prediction
        The round's predicted mask on that grid (what the corrector started from).
    out_mask
        The accepted mask (uint8); its sidecar holds the record of :data:`ACCEPTED_COLUMNS`.
    subject, round_index, batch
        The subject, the round and the subjects selected in it.
    n_classes
        Classes of the model, background included.

    Raises
    ------
    DataError
        The subject is not in the batch, or the correction holds NaN, fractions or unknown classes.
    GeometryError
        The correction is not on the reference grid.
    """
    if subject not in batch:
        raise DataError(
            f"a correction for round {round_index}, whose batch is {list(batch)}", subject=subject, path=correction
        )
    grid = geometry_of(load_nifti(reference, subject=subject))
    img = load_nifti(correction, subject=subject)
    check_same_grid(geometry_of(img), grid, what="correction vs reference image", subject=subject, path=correction)
    labels = _label_values(np.asarray(img.dataobj), n_classes=n_classes, subject=subject, path=correction)
    pred_img = load_nifti(prediction, subject=subject)
    check_same_grid(geometry_of(pred_img), grid, what="prediction vs reference image", subject=subject, path=prediction)
    pred = np.asarray(pred_img.dataobj)
    union = int(((pred > 0) | (labels > 0)).sum())
    changed = int((pred != labels).sum())
    save_checked(labels, grid, out_mask, dtype=np.uint8, what="accepted correction", subject=subject)
    record: dict[str, Any] = {
        "correction": str(correction),
        "changed_voxels": changed,
        "changed_share": round(changed / union, 6) if union else 0.0,
        "predicted_voxels": int((pred > 0).sum()),
        "corrected_voxels": int((labels > 0).sum()),
    }
    write_sidecar(
        out_mask,
        stage="labeling",
        subject=subject,
        inputs=[correction, reference, prediction],
        parameters={"round": int(round_index), "n_classes": int(n_classes)},
        geometry=grid,
        extra=record,
    )
    logger.info(
        "round %d: accepted the correction of %s (%.1f %% of voxels changed)",
        round_index,
        subject,
        100 * float(record["changed_share"]),
    )
    return Path(out_mask)


def check_round_folder(folder: str | Path, batch: Sequence[str], round_index: int) -> None:
    """Refuse a corrections folder with a mask of a subject outside the batch, or a mask missing.

    Raises
    ------
    DataError
        Naming the unexpected or missing files and the batch.
    """
    folder = Path(folder)
    found = {m["subject"]: p for p in sorted(folder.glob("*")) if (m := _CORRECTION.match(p.name))}
    outside = sorted(str(p) for s, p in found.items() if s not in batch)
    if outside:
        raise DataError(
            f"round {round_index}: corrections of subjects outside the batch {list(batch)}: {outside}", path=folder
        )
    missing = [str(folder / CORRECTION_NAME.format(subject=s)) for s in batch if s not in found]
    if missing:
        raise DataError(f"round {round_index}: corrections missing: {missing}", path=folder)


def ingest_round(
    accepted: Sequence[str | Path],
    out_tsv: str | Path,
    *,
    batch: Sequence[str],
    round_index: int,
    folder: str | Path | None,
) -> Path:
    """Write ``accepted.tsv`` of a round from its accepted masks (and the returned worklist's minutes).

    Parameters
    ----------
    accepted
        The accepted masks of :func:`accept_correction`, one per batch subject.
    out_tsv
        ``results/labeling/round-<r>/accepted.tsv`` (:data:`ACCEPTED_COLUMNS`).
    batch, round_index
        The subjects selected in the round, and the round.
    folder
        The round's corrections folder (human mode; checked with :func:`check_round_folder`), or None.
    """
    if folder is not None:
        check_round_folder(folder, batch, round_index)
    minutes = read_minutes(Path(folder) / RETURNED_WORKLIST if folder is not None else None, batch)
    rows: list[dict[str, Any]] = []
    for path in accepted:
        record = read_sidecar(path)
        s = str(record["subject"])
        source = Path(record["correction"])
        rows.append(
            {
                "subject": s,
                "correction": str(source),
                "sha256": sha256_file(source),
                **{k: record[k] for k in ACCEPTED_COLUMNS[3:7]},
                "correction_minutes": minutes.get(s),
            }
        )
    got = sorted(r["subject"] for r in rows)
    if got != sorted(batch):
        raise DataError(f"round {round_index}: accepted masks of {got}, but the batch is {sorted(batch)}")
    logger.info("round %d: %d corrections accepted", round_index, len(rows))
    return write_tsv(pd.DataFrame(rows, columns=ACCEPTED_COLUMNS), out_tsv)
