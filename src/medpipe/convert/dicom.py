"""Convert one selected DICOM series to NIfTI with dcm2niix, de-identified, with a medpipe sidecar.

Steps (``convert_sequence``): find the DICOM files below the subject's folder, group them into
candidate volumes, select the one the sequence's selector asks for, refuse it when its geometry
is not one regular volume (:mod:`medpipe.convert.checks`), run dcm2niix (``-ba y``) on exactly
those files in a temporary folder, then write the final NIfTI through :func:`medpipe.core.io.save_nifti`
(header text blank) with a sidecar (geometry, dcm2niix version, series UIDs, the anonymised BIDS
fields minus anything identifying, sha256 of every input file), a de-identification table and a
QC figure. The sidecar's ``modality`` is the header's Modality (0008,0060) (a
:class:`medpipe.core.records.ModalityRecord`, ``modality_source: dicom_header``); a modality declared
in config must agree with it (:func:`medpipe.convert.discover.check_declared_modality`).

The image keeps dcm2niix's voxel grid and orientation (no reorientation here): later stages work
in world coordinates and reorient where they need to, so this stage stays a faithful conversion.
Rescale slope/intercept are applied: an image whose dcm2niix output is scaled is stored as float32.
With ``sequences.<name>.suv: true`` a PET series is stored as body-weight SUV (float32): dcm2niix's Bq/mL
times the factor :mod:`medpipe.convert.suv` computes from the headers, recorded as the sidecar's ``suv``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.convert.checks import (
    SeriesLayout,
    check_dcm2niix_messages,
    check_pixel_data,
    check_series_geometry,
)
from medpipe.convert.deid import dicom_rows, header_rows, phi_values, redact, scrub_bids, write_deid_table
from medpipe.convert.discover import (
    Selector,
    SeriesGroup,
    group_series,
    parse_selector,
    scan_dicom_folder,
    select_series,
)
from medpipe.convert.suv import SuvRecord, apply_suv, pet_suv, suv_requested
from medpipe.core.errors import DicomError
from medpipe.core.geometry import Geometry
from medpipe.core.io import load_nifti, save_nifti, stored_voxels
from medpipe.core.records import MODALITY_TAG, ModalityRecord
from medpipe.core.sidecar import sha256_file, write_sidecar

logger = logging.getLogger(__name__)

#: Output base name given to dcm2niix inside the temporary folder (never derived from DICOM tags).
_BASE = "image"


def find_dcm2niix() -> str:
    """Path of the dcm2niix binary: beside the running Python (the venv's pinned one), else on PATH."""
    beside = Path(sys.executable).parent / "dcm2niix"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("dcm2niix")
    if found is None:
        raise DicomError(
            "dcm2niix not found beside the Python interpreter or on PATH; install the "
            "'dcm2niix' package from requirements.lock"
        )
    return found


def _stage_inputs(paths: Sequence[Path], folder: Path) -> None:
    """Link (or copy) the selected files under neutral names, so dcm2niix sees only this series."""
    folder.mkdir(parents=True)
    for n, src in enumerate(paths, start=1):
        dst = folder / f"{n:06d}.dcm"
        try:
            dst.symlink_to(Path(src).resolve())
        except OSError:
            shutil.copyfile(src, dst)


def run_dcm2niix(
    paths: Sequence[Path],
    workdir: Path,
    *,
    subject: str,
    sequence: str,
    label: str,
    phi: Sequence[str] = (),
    allow_tilt: bool = False,
) -> tuple[Path, dict[str, Any], list[str]]:
    """Run dcm2niix on ``paths``; return the one NIfTI it wrote, its BIDS sidecar and its warnings.

    Raises
    ------
    DicomError
        When dcm2niix fails, reports a fatal condition, or writes no or several images.
    """
    indir, outdir = workdir / "in", workdir / "out"
    _stage_inputs(paths, indir)
    outdir.mkdir()
    cmd = [
        find_dcm2niix(),
        "-b",
        "y",
        "-ba",
        "y",
        "-z",
        "n",
        "-w",
        "1",
        "-f",
        _BASE,
        "-o",
        str(outdir),
        str(indir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    text = proc.stdout + "\n" + proc.stderr
    warnings = check_dcm2niix_messages(
        text, subject=subject, sequence=sequence, label=label, phi=phi, allow_tilt=allow_tilt
    )
    images = sorted(outdir.glob("*.nii"))
    if allow_tilt and (outdir / f"{_BASE}_Tilt_1.nii").exists():
        images = [outdir / f"{_BASE}_Tilt_1.nii"]
        warnings.append("gantry tilt corrected by dcm2niix (selector gantry_tilt: resample)")
    if proc.returncode != 0 and not images:
        tail = redact(" | ".join(text.strip().splitlines()[-3:]), phi)
        raise DicomError(
            f"sequence {sequence}: dcm2niix failed on {label} (exit {proc.returncode}): {tail}",
            subject=subject,
        )
    if len(images) != 1:
        names = [p.name.replace(_BASE, "<image>") for p in images]
        raise DicomError(
            f"sequence {sequence}: dcm2niix wrote {len(images)} images from {label} ({names}); "
            "expected exactly one volume",
            subject=subject,
        )
    json_path = outdir / f"{_BASE}.json"
    bids: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    return images[0], bids, warnings


def _input_hashes(paths: Sequence[Path]) -> dict[str, Any]:
    hashes = sorted(sha256_file(p) for p in paths)
    combined = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
    return {"n_files": len(hashes), "sha256_combined": combined, "sha256": hashes}


def _source_record(group: SeriesGroup, layout: SeriesLayout) -> dict[str, Any]:
    first = group.first
    sops = sorted({str(i.get("SOPInstanceUID", "")) for i in group.instances} - {""})
    return {
        "series_instance_uid": group.series_uid,
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
        "sop_instance_uids": sops,
        "modality": first.modality,
        "series_number": None if first.get("SeriesNumber") is None else int(first.get("SeriesNumber")),
        "split": dict(group.split),
        "n_slices": layout.n_slices,
        "n_volumes": layout.n_volumes,
        "slice_spacing_mm": None if layout.slice_spacing_mm is None else round(layout.slice_spacing_mm, 6),
        "gantry_tilt_deg": round(layout.tilt_deg, 4),
        "image_orientation_patient": [round(v, 6) for v in layout.orientation],
    }


def header_modality(group: SeriesGroup, *, subject: str, sequence: str, phi: Sequence[str] = ()) -> ModalityRecord:
    """The modality record of the selected series: its header's Modality (0008,0060).

    Raises
    ------
    DicomError
        When the header has no Modality (a type-1 attribute: every image series has one).
    """
    if not group.first.modality:
        raise DicomError(
            f"sequence {sequence}: {group.label(phi)} has no {MODALITY_TAG}; medpipe needs it to treat CT, PET "
            "and MR correctly (N4, normalisation): fix the export",
            subject=subject,
        )
    return ModalityRecord(modality=group.first.modality, source="dicom_header")


def _series_suv(
    group: SeriesGroup, wanted: bool, *, subject: str, sequence: str, phi: Sequence[str]
) -> SuvRecord | None:
    """The SUVbw factor of the selected PET series when ``sequences.<sequence>.suv`` is true, else ``None``."""
    if not wanted:
        return None
    headers = [inst.header for inst in group.instances]
    return pet_suv(headers, modality=group.first.modality, subject=subject, sequence=sequence, label=group.label(phi))


def _select_group(root: Path, sel: Selector, *, subject: str, sequence: str) -> tuple[SeriesGroup, list[str]]:
    """Scan ``root``, group its files into candidate volumes and pick the one ``sel`` selects.

    Returns
    -------
    group, phi
        The selected series and the identifying values of the folder (to redact from messages).
    """
    instances = scan_dicom_folder(root, subject=subject)
    phi = phi_values(inst.header for inst in instances)
    group = select_series(
        group_series(instances, allow_4d=sel.allow_4d), sel, subject=subject, sequence=sequence, phi=phi
    )
    return group, phi


def _convert_group(
    group: SeriesGroup, sel: Selector, *, subject: str, sequence: str, phi: Sequence[str]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64], dict[str, Any], list[str]]:
    """Run dcm2niix on the selected series and read its output back.

    Returns
    -------
    data, affine, bids, warnings
        Voxels (a single volume squeezed to 3D), RAS+ affine, dcm2niix's BIDS sidecar and its warnings.

    Raises
    ------
    DicomError
        When dcm2niix fails or the output has several volumes without ``allow_4d``.
    """
    label = group.label(phi)
    with tempfile.TemporaryDirectory(prefix="medpipe-dcm2niix-") as tmp:
        nii, bids, warnings = run_dcm2niix(
            group.paths,
            Path(tmp),
            subject=subject,
            sequence=sequence,
            label=label,
            phi=phi,
            allow_tilt=sel.gantry_tilt == "resample",
        )
        img = load_nifti(nii, subject=subject)
        data, affine = stored_voxels(img), np.asarray(img.affine, dtype=np.float64)
    for w in warnings:
        logger.warning("sequence %s: dcm2niix: %s", sequence, w)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4 and not sel.allow_4d:
        raise DicomError(
            f"sequence {sequence}: {label} converted to {data.shape[3]} volumes; set allow_4d",
            subject=subject,
        )
    return data, affine, bids, warnings


def _write_convert_sidecar(
    out_image: str | Path,
    out_deid: str | Path,
    *,
    subject: str,
    sequence: str,
    sel: Selector,
    group: SeriesGroup,
    layout: SeriesLayout,
    data: npt.NDArray[Any],
    geometry: Geometry,
    bids: Mapping[str, Any],
    warnings: list[str],
    phi: Sequence[str],
    suv: SuvRecord | None = None,
) -> tuple[str, int]:
    """Write the de-identification table and the sidecar of the converted image.

    Returns
    -------
    version, n_removed
        dcm2niix's version string and the number of BIDS fields removed as identifying.
    """
    clean_bids, removed = scrub_bids(bids, phi)
    write_deid_table([*dicom_rows([i.header for i in group.instances]), *removed, *header_rows()], out_deid)
    version = str(bids.get("ConversionSoftwareVersion", "unknown"))
    write_sidecar(
        out_image,
        stage="convert",
        subject=subject,
        parameters={"sequence": sequence, "selector": sel.as_dict(), "dcm2niix_options": "-b y -ba y -z n"},
        geometry=geometry,
        packages=["pydicom", "dcm2niix"],
        extra={
            **header_modality(group, subject=subject, sequence=sequence, phi=phi).to_json(),
            "dcm2niix_version": version,
            "source": _source_record(group, layout),
            "dicom_inputs": _input_hashes(group.paths),
            "shape": [int(v) for v in data.shape],
            "dtype": str(data.dtype),
            "bids": clean_bids,
            "deidentification": {
                "table": Path(out_deid).name,
                "n_removed_fields": len(removed),
                "dcm2niix_anonymised_sidecar": True,
            },
            "warnings": warnings,
            **({} if suv is None else {"suv": suv.to_json()}),
        },
    )
    return version, len(removed)


def convert_sequence(
    dicom_dir: str | Path,
    out_image: str | Path,
    out_deid: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    sequence: str,
    selector: Mapping[str, Any],
) -> Path:
    """Convert the series that ``selector`` picks in ``dicom_dir`` to a de-identified NIfTI.

    Parameters
    ----------
    dicom_dir
        The subject's DICOM folder (any layout; several series allowed), or, when the selector
        names a ``nifti`` file, that file (imported by :func:`medpipe.convert.nifti.import_nifti_sequence`).
    out_image
        Output NIfTI (``.nii.gz``); its sidecar ``.json`` is written beside it.
    out_deid
        De-identification table (TSV): which tags/fields were dropped, never their values.
    out_qc
        QC figure (PNG): three orthogonal mid slices.
    subject, sequence
        Subject ID (from the subject sheet) and sequence name (config ``sequences``).
    selector
        Series selection rules, see :class:`medpipe.convert.discover.Selector`; a non-empty ``nifti``
        key (config validation fills the others with defaults) switches to the NIfTI import; ``suv: true``
        stores a PET series as body-weight SUV (:mod:`medpipe.convert.suv`).

    Returns
    -------
    Path
        ``out_image``.

    Raises
    ------
    DicomError
        No or several matching series, a refused series (tilt, spacing, missing slices, ...), a
        declared ``modality`` that the header's Modality (0008,0060) contradicts, unreadable or
        truncated files, ``suv: true`` on a series that is not PET or lacks a tag SUV needs, or a failed
        conversion; the message names subject, sequence, series and reason (or tag).
    ConfigError
        For a NIfTI input whose ``modality`` names several or an unknown modality, or with ``suv: true``.
    """
    from medpipe.core.qc import save_image_panel

    wants_suv = suv_requested(selector, subject=subject, sequence=sequence)  # refuses suv with a NIfTI input
    if selector.get("nifti"):
        from medpipe.convert.nifti import import_nifti_sequence

        return import_nifti_sequence(
            dicom_dir,
            out_image,
            out_deid,
            out_qc,
            subject=subject,
            sequence=sequence,
            modality=selector.get("modality"),
        )
    sel = parse_selector({k: v for k, v in selector.items() if k != "nifti"}, sequence=sequence)
    root = Path(dicom_dir)
    group, phi = _select_group(root, sel, subject=subject, sequence=sequence)
    layout = check_series_geometry(group, sel, subject=subject, sequence=sequence, phi=phi)
    check_pixel_data(group, subject=subject, root=root, sequence=sequence, phi=phi)
    header_modality(group, subject=subject, sequence=sequence, phi=phi)  # refuse before running dcm2niix
    suv = _series_suv(group, wants_suv, subject=subject, sequence=sequence, phi=phi)  # ditto
    data, affine, bids, warnings = _convert_group(group, sel, subject=subject, sequence=sequence, phi=phi)
    data = data if suv is None else apply_suv(data, suv)
    save_nifti(data, affine, out_image)
    geometry = Geometry(tuple(int(v) for v in data.shape[:3]), affine)
    version, n_removed = _write_convert_sidecar(
        out_image,
        out_deid,
        subject=subject,
        sequence=sequence,
        sel=sel,
        group=group,
        layout=layout,
        data=data,
        geometry=geometry,
        bids=bids,
        warnings=warnings,
        phi=phi,
        suv=suv,
    )
    save_image_panel(
        data,
        out_qc,
        title=f"sub-{subject} {sequence} ({layout.n_slices} slices, dcm2niix {version})",
        spacing=geometry.spacing,
    )
    logger.info(
        "sequence %s: wrote %s %s %s (%s removed sidecar field(s))",
        sequence,
        Path(out_image).name,
        tuple(data.shape),
        data.dtype,
        n_removed,
    )
    return Path(out_image)
