"""Import a sequence that arrives as NIfTI instead of DICOM (config ``sequences.<name>.nifti``).

Many public and research cohorts (the IBSI soft-tissue-sarcoma set among them) ship NIfTI only.
``import_nifti_sequence`` gives such an image the same contract as a converted DICOM series: the
voxels and the world affine are kept exactly (no reorientation, no resampling), the header is
rewritten by :func:`medpipe.core.io.save_nifti` (free-text fields blanked, header extensions dropped:
both can hold identifiers), and the sidecar records the source file's sha256, the geometry and
what was removed, and the modality record (:func:`medpipe.core.records.declared_modality`: the
declared ``sequences.<name>.modality``, or MR with a note saying it was assumed). Images that are
not one 3D volume, hold non-finite voxels, or have a singular affine are refused with a message
naming the subject, the sequence and the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.convert.deid import header_rows, write_deid_table
from medpipe.core.errors import DataError
from medpipe.core.geometry import Geometry
from medpipe.core.io import load_nifti, save_nifti, stored_voxels
from medpipe.core.records import declared_modality
from medpipe.core.sidecar import write_sidecar

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def check_nifti_volume(img: nib.Nifti1Image, *, subject: str, sequence: str, path: Path) -> npt.NDArray[Any]:
    """Voxels of ``img`` after checking it is one finite 3D volume with an invertible affine."""
    data = stored_voxels(img)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(
            f"sequence {sequence}: not one 3D volume (shape {tuple(data.shape)})", subject=subject, path=path
        )
    if min(data.shape) < 1:
        raise DataError(f"sequence {sequence}: empty image (shape {tuple(data.shape)})", subject=subject, path=path)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise DataError(f"sequence {sequence}: {n_bad} non-finite voxel(s)", subject=subject, path=path)
    affine = np.asarray(img.affine, dtype=np.float64)
    det = float(np.linalg.det(affine[:3, :3]))
    if not np.isfinite(affine).all() or abs(det) < 1e-9:
        raise DataError(
            f"sequence {sequence}: singular or non-finite affine (det {det:.3g})", subject=subject, path=path
        )
    return data


def import_nifti_sequence(
    source: str | Path,
    out_image: str | Path,
    out_deid: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    sequence: str,
    modality: str | Sequence[str] | None = None,
) -> Path:
    """Copy one NIfTI image into the pipeline's converted-image contract.

    Parameters
    ----------
    source
        The subject's NIfTI file (``.nii`` or ``.nii.gz``).
    out_image
        Output NIfTI (``.nii.gz``); its sidecar ``.json`` is written beside it.
    out_deid
        De-identification table (TSV) listing the header fields that were blanked or dropped.
    out_qc
        QC figure (PNG): three orthogonal mid slices.
    subject, sequence
        Subject ID and sequence name (config ``sequences``).
    modality
        ``sequences.<sequence>.modality``: ``CT``, ``MR`` or ``PT`` (or a list of one); when not given the
        image is recorded as MR and the sidecar says it was assumed (``modality_source: default``).

    Returns
    -------
    Path
        ``out_image``.

    Raises
    ------
    ConfigError
        When ``modality`` names several modalities or an unknown one.
    DataError
        Missing or unreadable file, not a NIfTI, not one finite 3D volume, or a singular affine.
    """
    from medpipe.core.qc import save_image_panel

    record = declared_modality(modality, sequence=sequence, subject=subject)
    if record.note:
        logger.warning("sequence %s: %s (declare CT or PT there for other images)", sequence, record.note)

    path = Path(source)
    if not path.is_file():
        raise DataError(f"sequence {sequence}: NIfTI file not found", subject=subject, path=path)
    if not path.name.endswith(_NIFTI_SUFFIXES):
        raise DataError(f"sequence {sequence}: not a NIfTI file name (.nii / .nii.gz)", subject=subject, path=path)
    img = load_nifti(path, subject=subject)
    data = check_nifti_volume(img, subject=subject, sequence=sequence, path=path)
    affine = np.asarray(img.affine, dtype=np.float64)
    n_extensions = len(img.header.extensions)
    save_nifti(data, affine, out_image)
    geometry = Geometry(tuple(int(v) for v in data.shape), affine)
    rows = header_rows()
    if n_extensions:
        rows.append(
            {
                "source": "nifti_header",
                "tag": "",
                "keyword": "extensions",
                "action": "dropped",
                "reason": f"{n_extensions} header extension(s) may embed source headers",
            }
        )
    write_deid_table(rows, out_deid)
    write_sidecar(
        out_image,
        stage="convert",
        subject=subject,
        inputs=[path],
        parameters={"sequence": sequence, "source_format": "nifti"},
        geometry=geometry,
        packages=["nibabel"],
        extra={
            **record.to_json(),
            "source": {
                "format": "nifti",
                "file_name": path.name,
                "qform_code": int(img.header["qform_code"]),
                "sform_code": int(img.header["sform_code"]),
            },
            "shape": [int(v) for v in data.shape],
            "dtype": str(data.dtype),
            "deidentification": {"table": Path(out_deid).name, "n_dropped_extensions": n_extensions},
        },
    )
    save_image_panel(data, out_qc, title=f"sub-{subject} {sequence} (NIfTI input)", spacing=geometry.spacing)
    logger.info("sequence %s: imported %s %s %s", sequence, path.name, tuple(data.shape), data.dtype)
    return Path(out_image)
