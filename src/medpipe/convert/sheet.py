"""Build a subject sheet from a folder of subject folders (``medpipe sheet``).

For cohorts already laid out one folder per subject (DICOM trees, or NIfTI files as in the IBSI
soft-tissue-sarcoma set): one row per sub-folder, sorted by name. The subject ID is the folder
name without its non-alphanumeric characters (``STS_001`` -> ``STS001``), because medpipe writes
only letters and digits into file names; two folders that map to one ID are an error. Folders
that lack a required file are skipped with a warning naming them, never silently.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from medpipe.core.errors import ConfigError
from medpipe.core.io import atomic_path

logger = logging.getLogger(__name__)


def subject_id(folder_name: str) -> str:
    """Sheet ID of a subject folder: its letters and digits."""
    return re.sub(r"[^A-Za-z0-9]", "", folder_name)


def make_subject_sheet(
    root: str | Path,
    out: str | Path,
    *,
    label: str | None = None,
    require: Sequence[str] = (),
) -> Path:
    """Write a subject sheet (TSV: subject, dicom, label) for every sub-folder of ``root``.

    Parameters
    ----------
    root
        Folder holding one sub-folder per subject; written into the sheet as an absolute path.
    out
        Sheet to write.
    label
        File name of the human mask inside each subject folder (NIfTI, RTSTRUCT or DICOM-SEG);
        subjects without it get an empty label (predicted, not trained on or scored).
    require
        File names every subject folder must hold (e.g. the ``sequences.*.nifti`` files).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError
        ``root`` is not a folder, holds no usable subject folder, or two folders map to one ID.
    """
    base = Path(root).resolve()
    if not base.is_dir():
        raise ConfigError("subject root folder not found", path=root)
    rows: dict[str, tuple[str, str, str]] = {}
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        missing = [name for name in require if not (folder / name).is_file()]
        if missing:
            logger.warning("skipping %s: no %s", folder.name, ", ".join(missing))
            continue
        sid = subject_id(folder.name)
        if not sid:
            raise ConfigError(f"folder name {folder.name!r} has no letters or digits for a subject ID", path=folder)
        if sid in rows:
            raise ConfigError(f"folders {rows[sid][1]!r} and {folder.name!r} both map to subject ID {sid!r}", path=base)
        mask = folder / label if label else None
        rows[sid] = (sid, str(folder), str(mask) if mask is not None and mask.exists() else "")
    if not rows:
        raise ConfigError(f"no subject folder{' with ' + ', '.join(require) if require else ''} found", path=base)
    unlabelled = [sid for sid, (_, _, lab) in rows.items() if label and not lab]
    if unlabelled:
        logger.warning("%d subject(s) without %s: %s", len(unlabelled), label, ", ".join(unlabelled))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["subject", "dicom", "label"])
        writer.writerows(rows.values())
    logger.info("subject sheet %s: %d subjects (%d labelled)", out, len(rows), len(rows) - len(unlabelled))
    return out
