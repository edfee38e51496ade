"""Refusal rules: check a selected series with pydicom before dcm2niix sees it.

A series is refused (:class:`medpipe.core.errors.DicomError` naming subject, series and every reason
found) when it has gantry tilt, inconsistent slice spacing, missing slices, mixed orientations,
mixed matrix sizes, too few slices for a volume, or unreadable/truncated files. dcm2niix's own
warnings are parsed afterwards by :func:`check_dcm2niix_messages`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.encaps import generate_frames

from medpipe.convert.deid import redact
from medpipe.convert.discover import DicomInstance, Selector, SeriesGroup
from medpipe.core.errors import DicomError

logger = logging.getLogger(__name__)

#: Slices whose positions along the normal differ by less than this (mm) are at one position.
POSITION_TOL_MM = 0.01
#: Relative deviation of one slice gap from the median gap that is still "consistent".
SPACING_RTOL = 0.01
#: Absolute slack (mm) on slice gaps (rounding of positions written by scanners).
SPACING_ATOL_MM = 0.01
#: Largest angle (degrees) between the slice normal and the stacking direction accepted as untilted.
TILT_TOL_DEG = 0.1

#: dcm2niix messages that mean the output would not be a faithful regular volume.
FATAL_DCM2NIIX = (
    (re.compile(r"gantry tilt", re.I), "gantry tilt"),
    (re.compile(r"interslice distance varies", re.I), "inconsistent slice spacing"),
    (re.compile(r"missing images", re.I), "missing slices"),
    (re.compile(r"single slice", re.I), "not a volume (single slice)"),
    (re.compile(r"slices not stacked|unable to determine slice direction", re.I), "slices not stacked"),
    (re.compile(r"^error", re.I), "dcm2niix error"),
)


@dataclass(frozen=True)
class SeriesLayout:
    """Geometry facts of an accepted series."""

    n_slices: int
    n_volumes: int
    slice_spacing_mm: float | None
    tilt_deg: float
    orientation: tuple[float, ...]


def _frames(inst: DicomInstance) -> list[tuple[tuple[float, ...] | None, tuple[float, float, float] | None]]:
    """(orientation, position) of every frame of one file."""
    if inst.n_frames <= 1 or "PerFrameFunctionalGroupsSequence" not in inst.header:
        return [(inst.orientation, inst.position)]
    shared = inst.header.get("SharedFunctionalGroupsSequence")
    shared_item = shared[0] if shared else None
    out = []
    for item in inst.header.PerFrameFunctionalGroupsSequence:

        def attr(seq: str, key: str, item: Any = item) -> Any:
            for src in (item, shared_item):
                if src is not None and seq in src and key in src[seq][0]:
                    return src[seq][0][key].value
            return None

        iop = attr("PlaneOrientationSequence", "ImageOrientationPatient")
        ipp = attr("PlanePositionSequence", "ImagePositionPatient")
        out.append(
            (
                None if iop is None else tuple(float(v) for v in iop),
                None if ipp is None else (float(ipp[0]), float(ipp[1]), float(ipp[2])),
            )
        )
    return out


def _clusters(values: npt.NDArray[np.float64], tol: float) -> list[tuple[float, int]]:
    """Sorted distinct values (within ``tol``) with their counts."""
    out: list[list[float]] = []
    for v in np.sort(values):
        if out and v - out[-1][-1] <= tol:
            out[-1].append(float(v))
        else:
            out.append([float(v)])
    return [(float(np.mean(c)), len(c)) for c in out]


def _spacing_problems(centres: npt.NDArray[np.float64]) -> tuple[list[str], float | None]:
    gaps = np.diff(centres)
    if gaps.size == 0:
        return [], None
    median = float(np.median(gaps))
    bad = np.abs(gaps - median) > max(SPACING_RTOL * median, SPACING_ATOL_MM)
    if not bad.any():
        return [], float(np.mean(gaps))
    shown = ", ".join(f"{g:.4g}" for g in gaps[:12]) + (" ..." if gaps.size > 12 else "")
    problems = [f"inconsistent slice spacing (gaps {shown} mm; median {median:.4g} mm)"]
    ratios = gaps[bad] / median
    whole = np.abs(ratios - np.round(ratios)) < 0.05
    if whole.any() and (np.round(ratios[whole]) >= 2).all():
        n_missing = int(np.sum(np.round(ratios[whole]) - 1))
        where = ", ".join(f"{centres[i]:.4g}" for i in np.flatnonzero(bad)[:5])
        problems.append(
            f"missing slices: {n_missing} slice(s) missing (gaps of whole multiples of the spacing "
            f"after slice position(s) {where} mm along the normal)"
        )
    return problems, median


def _frame_geometry(
    frames: Sequence[tuple[tuple[float, ...] | None, tuple[float, float, float] | None]],
    group: SeriesGroup,
    *,
    subject: str,
    sequence: str,
    phi: Sequence[str],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Orientation (N x 6) and position (N x 3) arrays of every frame.

    Raises
    ------
    DicomError
        When a frame lacks ImagePositionPatient or ImageOrientationPatient.
    """
    if any(o is None or p is None for o, p in frames):
        raise DicomError(
            f"sequence {sequence}: {group.label(phi)}: images without ImagePositionPatient/"
            "ImageOrientationPatient; cannot place slices in space",
            subject=subject,
        )
    iops = np.array([o for o, _ in frames], dtype=np.float64)
    ipps = np.array([p for _, p in frames], dtype=np.float64)
    return iops, ipps


def _slice_normal(iop: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Unit normal of the slice plane spanned by the row and column directions of ``iop``."""
    normal = np.asarray(np.cross(iop[:3], iop[3:]), dtype=np.float64)
    normal /= np.linalg.norm(normal)
    return normal


def _stacking_problems(counts: Sequence[int], n_frames: int, selector: Selector) -> list[str]:
    """Problems with how the images stack into slice positions (``counts``: images per position)."""
    problems: list[str] = []
    n_slices, n_volumes = len(counts), counts[0]
    if n_slices == 1:
        problems.append(
            "single slice: a volume is required"
            if n_frames == 1
            else f"not a volume: all {n_frames} images lie at one slice position (single slice)"
        )
    elif len(set(counts)) > 1:
        problems.append(
            f"slice positions repeat unevenly (between {min(counts)} and {max(counts)} images per "
            "position): missing or duplicate slices"
        )
    elif n_volumes > 1 and not selector.allow_4d:
        problems.append(
            f"series holds {n_volumes} volumes at the same {n_slices} slice positions (4D); "
            "set allow_4d or select one echo/acquisition"
        )
    if 1 < n_slices < selector.min_slices:
        problems.append(
            f"slice count too small: only {n_slices} slices; a volume needs at least {selector.min_slices} (min_slices)"
        )
    return problems


def _tilt_deg(
    ipps: npt.NDArray[np.float64], along: npt.NDArray[np.float64], normal: npt.NDArray[np.float64], group: SeriesGroup
) -> float:
    """Angle between the slice normal and the stacking direction, or the GantryDetectorTilt tag if larger."""
    order = np.argsort(along)
    step = ipps[order[-1]] - ipps[order[0]]
    tilt = float(np.degrees(np.arccos(min(1.0, abs(float(step @ normal)) / float(np.linalg.norm(step))))))
    tag_tilt = abs(float(group.first.get("GantryDetectorTilt", 0.0) or 0.0))
    return max(tilt, tag_tilt)


def check_series_geometry(
    group: SeriesGroup, selector: Selector, *, subject: str, sequence: str, phi: Sequence[str] = ()
) -> SeriesLayout:
    """Refuse a series that is not one regular volume (or a regular 4D series when allowed).

    Raises
    ------
    DicomError
        Naming the subject, the series and every problem found.
    """
    problems: list[str] = []
    frames = [f for inst in group.instances for f in _frames(inst)]
    matrices = {(int(i.get("Rows", 0)), int(i.get("Columns", 0))) for i in group.instances}
    if len(matrices) > 1:
        problems.append(f"mixed matrix sizes {sorted(matrices)}")
    iops, ipps = _frame_geometry(frames, group, subject=subject, sequence=sequence, phi=phi)
    if np.abs(iops - iops[0]).max() > 1e-3:
        n_orient = len({tuple(np.round(o, 3)) for o in iops})
        problems.append(f"mixed orientations ({n_orient} slice orientations in one series)")
    normal = _slice_normal(iops[0])
    along = ipps @ normal
    positions = _clusters(along, POSITION_TOL_MM)
    counts = [c for _, c in positions]
    n_slices, n_volumes = len(positions), counts[0]
    problems += _stacking_problems(counts, len(frames), selector)
    tilt = 0.0
    spacing: float | None = None
    if n_slices > 1:
        tilt = _tilt_deg(ipps, along, normal, group)
        if tilt > TILT_TOL_DEG and selector.gantry_tilt == "refuse":
            problems.append(
                f"gantry tilt of {tilt:.2f} degrees (slices are sheared; set gantry_tilt: resample "
                "to accept dcm2niix's tilt-corrected volume)"
            )
        spacing_problems, spacing = _spacing_problems(np.array([c for c, _ in positions]))
        problems += spacing_problems
    if problems:
        raise DicomError(f"sequence {sequence}: refused {group.label(phi)}: " + "; ".join(problems), subject=subject)
    logger.info(
        "sequence %s: %d slice(s) x %d volume(s), slice spacing %s mm, tilt %.3f deg",
        sequence,
        n_slices,
        n_volumes,
        "n/a" if spacing is None else f"{spacing:.4g}",
        tilt,
    )
    return SeriesLayout(n_slices, n_volumes, spacing, tilt, tuple(float(v) for v in iops[0]))


def _expected_bytes(ds: pydicom.Dataset) -> int:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.BitsAllocated)
    n = int(ds.Rows) * int(ds.Columns) * samples * frames
    return (n + 7) // 8 if bits == 1 else n * (bits // 8)


def check_pixel_data(
    group: SeriesGroup, *, subject: str, root: str | Path, sequence: str, phi: Sequence[str] = ()
) -> None:
    """Read every file of the series fully; refuse truncated or unreadable pixel data, naming the file."""
    for inst in group.instances:
        name = _relative(inst.path, root)
        try:
            ds = pydicom.dcmread(inst.path, force=True)
            if "PixelData" not in ds:
                raise ValueError("no pixel data")
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is not None and syntax.is_compressed:
                n = sum(1 for _ in generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))
                if n < int(ds.get("NumberOfFrames", 1) or 1):
                    raise ValueError(f"{n} compressed frame(s) of {ds.get('NumberOfFrames', 1)}")
            elif len(ds.PixelData) < _expected_bytes(ds):
                raise ValueError(f"pixel data has {len(ds.PixelData)} of {_expected_bytes(ds)} bytes")
        except Exception as exc:  # pydicom raises many types for broken files
            raise DicomError(
                f"sequence {sequence}: {group.label(phi)}: truncated or unreadable file "
                f"({redact(str(exc), phi)}); the volume would be incomplete, so the series is refused",
                subject=subject,
                path=name,
            ) from exc


def _relative(path: Path, root: str | Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(path.name)


def check_dcm2niix_messages(
    text: str, *, subject: str, sequence: str, label: str, phi: Sequence[str] = (), allow_tilt: bool = False
) -> list[str]:
    """Refuse on dcm2niix messages that signal a non-regular volume; return the other warnings.

    With ``allow_tilt`` (selector ``gantry_tilt: resample``) tilt messages are only warnings.
    """
    fatal, warnings = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line.lower().startswith(("warning", "error")) and "tilt" not in line.lower():
            continue
        hits = [
            reason
            for pattern, reason in FATAL_DCM2NIIX
            if pattern.search(line) and not (allow_tilt and reason == "gantry tilt")
        ]
        if hits:
            fatal.append(f"{hits[0]} (dcm2niix: {redact(line, phi)})")
        elif line.lower().startswith("warning") or "tilt" in line.lower():
            warnings.append(redact(line, phi))
    if fatal:
        raise DicomError(f"sequence {sequence}: refused {label}: " + "; ".join(fatal), subject=subject)
    return warnings
