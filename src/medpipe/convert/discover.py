"""Series discovery: walk a subject's DICOM folder, group the images into volumes, pick one.

A hospital export holds many series in any folder layout and file order. Files are grouped by
``SeriesInstanceUID``; a UID that holds several volumes is split further by echo number, by slice
orientation and (when each acquisition is a complete volume of its own) by acquisition number.
The series a sequence asks for is chosen by a selector from config (see :class:`Selector`).

Nothing here logs tag values that could identify a patient: series are described by number,
modality, UID and a series description with known identifying values redacted.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medpipe.convert.deid import redact
from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError, DicomError
from medpipe.core.records import MODALITY_TAG

logger = logging.getLogger(__name__)

#: Modalities that never hold an image volume (structure sets, plans, reports, presentation states).
NON_IMAGE_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SEG", "SR", "PR", "KO", "REG", "DOC"})
#: SOP class of a DICOMDIR (media index), skipped.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Orientations (direction cosines) closer than this are the same orientation.
ORIENTATION_TOL = 1e-3
#: Keys of ``sequences.<name>`` that are no selection rules: filled from the schema, then dropped by
#: :func:`parse_selector` (``nifti``: a NIfTI input, which the caller imports instead of parsing a selector;
#: ``suv``: body-weight SUV of a PET series, accepted here and read by :mod:`medpipe.convert.suv`).
CONVERSION_OPTIONS = ("nifti", "suv")


@dataclass
class DicomInstance:
    """Header facts of one DICOM file (pixel data not read)."""

    path: Path
    header: Dataset = field(repr=False)

    def get(self, keyword: str, default: Any = None) -> Any:
        """Value of a top-level attribute (``default`` when absent or empty)."""
        value = self.header.get(keyword, default)
        return default if value is None or value == "" else value

    @property
    def series_uid(self) -> str:
        return str(self.get("SeriesInstanceUID", ""))

    @property
    def modality(self) -> str:
        return str(self.get("Modality", "")).upper()

    @property
    def image_type(self) -> tuple[str, ...]:
        value = self.get("ImageType", ())
        values = [value] if isinstance(value, str) else list(value)
        return tuple(str(v).upper() for v in values)

    @property
    def n_frames(self) -> int:
        return int(self.get("NumberOfFrames", 1) or 1)

    @property
    def orientation(self) -> tuple[float, ...] | None:
        """ImageOrientationPatient (top level, else shared functional groups)."""
        iop = self.get("ImageOrientationPatient")
        if iop is None:
            shared = self.get("SharedFunctionalGroupsSequence")
            if shared and "PlaneOrientationSequence" in shared[0]:
                iop = shared[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
        return None if iop is None else tuple(float(v) for v in iop)

    @property
    def position(self) -> tuple[float, float, float] | None:
        ipp = self.get("ImagePositionPatient")
        return None if ipp is None else (float(ipp[0]), float(ipp[1]), float(ipp[2]))

    @property
    def is_image(self) -> bool:
        return "Rows" in self.header and "Columns" in self.header and self.modality not in NON_IMAGE_MODALITIES


@dataclass
class SeriesGroup:
    """Files forming one candidate volume (or one 4D series)."""

    series_uid: str
    instances: list[DicomInstance]
    split: dict[str, str] = field(default_factory=dict)

    @property
    def first(self) -> DicomInstance:
        return self.instances[0]

    @property
    def paths(self) -> list[Path]:
        return [inst.path for inst in self.instances]

    def label(self, phi: Sequence[str] = ()) -> str:
        """Description for messages: number, modality, UID, redacted description, split, file count."""
        desc = redact(str(self.first.get("SeriesDescription", "")), phi)
        extra = "".join(f", {k} {v}" for k, v in sorted(self.split.items()))
        return (
            f"series {self.first.get('SeriesNumber', '?')} '{desc}' ({self.first.modality}, "
            f"UID {self.series_uid}{extra}, {len(self.instances)} file(s))"
        )


@dataclass(frozen=True)
class Selector:
    """Rules choosing one series for a sequence (config ``sequences.<name>``).

    Attributes
    ----------
    series_description
        Regular expression searched in SeriesDescription.
    modality
        Required Modality (``MR``, ``CT``, ``PT``, ...), or several: the header's Modality (0008,0060)
        must be one of them; a series the other rules pick whose header says otherwise is refused.
    series_uid
        Explicit SeriesInstanceUID.
    echo_number
        Required EchoNumbers (multi-echo series).
    acquisition_number
        Required AcquisitionNumber (one UID holding several complete acquisitions).
    exclude_image_type
        Series whose ImageType holds any of these values are ignored (localizers, derived maps).
    allow_4d
        Keep several volumes of one series together and convert a 4D image.
    min_slices
        Fewest slices accepted as a volume.
    gantry_tilt
        ``refuse`` or ``resample`` (use dcm2niix's tilt-corrected output).

    Defaults and allowed values are the schema's (``sequences.<name>`` in ``config.schema.yaml``);
    build one with :func:`parse_selector`. The conversion options of ``sequences.<name>`` that select
    nothing (:data:`CONVERSION_OPTIONS`) are validated there but are no fields here.
    """

    series_description: str | None
    modality: tuple[str, ...]
    series_uid: str | None
    echo_number: int | None
    acquisition_number: int | None
    exclude_image_type: tuple[str, ...]
    allow_4d: bool
    min_slices: int
    gantry_tilt: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (recorded in sidecars)."""
        return {
            "series_description": self.series_description,
            "modality": list(self.modality),
            "series_uid": self.series_uid,
            "echo_number": self.echo_number,
            "acquisition_number": self.acquisition_number,
            "exclude_image_type": list(self.exclude_image_type),
            "allow_4d": self.allow_4d,
            "min_slices": self.min_slices,
            "gantry_tilt": self.gantry_tilt,
        }


def parse_selector(raw: Mapping[str, Any], *, sequence: str) -> Selector:
    """Validate a selector mapping from config against the schema and fill its defaults.

    Raises
    ------
    ConfigError
        Unknown keys, a value the schema refuses, or an invalid regular expression, naming the sequence.
    """
    known = set(Selector.__dataclass_fields__) | {"suv"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"sequences.{sequence}: unknown selector key(s) {unknown}; known: {sorted(known)}")
    try:
        kw: dict[str, Any] = with_defaults(raw, "sequences", "*")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("sequences.*", f"sequences.{sequence}")) from exc
    for key in CONVERSION_OPTIONS:
        kw.pop(key, None)
    for key in ("modality", "exclude_image_type"):
        if key in kw:
            value = kw[key]
            kw[key] = tuple(str(v).upper() for v in ([value] if isinstance(value, str) else value or ()))
    if kw.get("series_description") is not None:
        try:
            re.compile(kw["series_description"])
        except re.error as exc:
            raise ConfigError(
                f"sequences.{sequence}.series_description is not a valid regular expression: {exc}"
            ) from exc
    return Selector(**kw)


def _read_header(path: Path, root: Path, subject: str) -> DicomInstance | None:
    """Header of ``path``; ``None`` for a file that is not DICOM; DicomError for a broken one."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    has_prefix = len(head) == 132 and head[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_prefix)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        if not has_prefix:
            logger.debug("skipping %s: not a DICOM file", path.relative_to(root))
            return None
        raise DicomError(
            f"unreadable DICOM file ({type(exc).__name__}); remove or replace it",
            subject=subject,
            path=path.relative_to(root),
        ) from exc
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        return None
    if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        if has_prefix:
            raise DicomError(
                "DICOM file without SOPClassUID/SeriesInstanceUID: truncated or corrupt header",
                subject=subject,
                path=path.relative_to(root),
            )
        logger.debug("skipping %s: not a DICOM file", path.relative_to(root))
        return None
    return DicomInstance(path=path, header=ds)


def scan_dicom_folder(folder: str | Path, *, subject: str) -> list[DicomInstance]:
    """Read the header of every DICOM file below ``folder`` (any layout, any order).

    Files that are not DICOM (README, thumbnails) are skipped; a file that starts like DICOM but
    cannot be parsed raises :class:`DicomError` naming it.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DicomError("DICOM folder not found", subject=subject, path=root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    instances = [inst for p in files if (inst := _read_header(p, root, subject)) is not None]
    if not instances:
        raise DicomError("no DICOM files found", subject=subject, path=root)
    logger.info("found %d DICOM file(s) (%d other file(s) skipped)", len(instances), len(files) - len(instances))
    return instances


def _cluster_orientations(instances: list[DicomInstance]) -> list[list[DicomInstance]]:
    clusters: list[tuple[np.ndarray, list[DicomInstance]]] = []
    for inst in instances:
        iop = np.asarray(inst.orientation if inst.orientation is not None else [np.nan] * 6)
        for rep, members in clusters:
            if np.all(np.abs(rep - iop) < ORIENTATION_TOL) or (np.isnan(rep).all() and np.isnan(iop).all()):
                members.append(inst)
                break
        else:
            clusters.append((iop, [inst]))
    return [members for _, members in clusters]


def _acquisitions_are_volumes(instances: list[DicomInstance]) -> bool:
    """True when positions repeat and every AcquisitionNumber holds a stack of distinct positions."""
    positions = [inst.position for inst in instances]
    if any(p is None for p in positions) or len(set(positions)) == len(positions):
        return False
    by_acq: dict[str, list[Any]] = defaultdict(list)
    for inst in instances:
        by_acq[str(inst.get("AcquisitionNumber", ""))].append(inst.position)
    return len(by_acq) > 1 and all(len(set(v)) == len(v) > 1 for v in by_acq.values())


def _sort_key(inst: DicomInstance) -> tuple[Any, ...]:
    return (int(inst.get("InstanceNumber", 0) or 0), str(inst.path))


def group_series(instances: Sequence[DicomInstance], *, allow_4d: bool = False) -> list[SeriesGroup]:
    """Group image files into candidate volumes.

    Files are grouped by SeriesInstanceUID, then split by echo number and orientation when one
    UID holds several, and by acquisition number when each acquisition is a complete volume
    (unless ``allow_4d`` keeps the volumes of one series together).
    """
    by_uid: dict[str, list[DicomInstance]] = defaultdict(list)
    for inst in instances:
        if inst.is_image:
            by_uid[inst.series_uid].append(inst)
    groups: list[SeriesGroup] = []
    for uid in sorted(by_uid):
        by_echo: dict[str, list[DicomInstance]] = defaultdict(list)
        for inst in by_uid[uid]:
            by_echo[str(inst.get("EchoNumbers", ""))].append(inst)
        for echo in sorted(by_echo):
            clusters = _cluster_orientations(by_echo[echo])
            for n, members in enumerate(clusters, start=1):
                split: dict[str, str] = {}
                if len(by_echo) > 1:
                    split["echo"] = echo or "none"
                if len(clusters) > 1:
                    split["orientation"] = f"{n}/{len(clusters)}"
                if not allow_4d and _acquisitions_are_volumes(members):
                    by_acq: dict[str, list[DicomInstance]] = defaultdict(list)
                    for inst in members:
                        by_acq[str(inst.get("AcquisitionNumber", ""))].append(inst)
                    for acq in sorted(by_acq, key=lambda a: (len(a), a)):
                        groups.append(
                            SeriesGroup(uid, sorted(by_acq[acq], key=_sort_key), {**split, "acquisition": acq})
                        )
                else:
                    groups.append(SeriesGroup(uid, sorted(members, key=_sort_key), split))
    return groups


def _excluded_reason(group: SeriesGroup, selector: Selector) -> str | None:
    hits = sorted(set(group.first.image_type) & set(selector.exclude_image_type))
    return f"ImageType {hits} excluded by rule" if hits else None


def _matches(group: SeriesGroup, selector: Selector) -> bool:
    first = group.first
    if selector.series_uid is not None and group.series_uid != selector.series_uid:
        return False
    if selector.modality and first.modality not in selector.modality:
        return False
    if selector.series_description is not None and not re.search(
        selector.series_description, str(first.get("SeriesDescription", ""))
    ):
        return False
    if selector.echo_number is not None and str(first.get("EchoNumbers", "")) != str(selector.echo_number):
        return False
    if selector.acquisition_number is not None and str(first.get("AcquisitionNumber", "")) != str(
        selector.acquisition_number
    ):
        return False
    return True


def check_declared_modality(
    groups: Sequence[SeriesGroup], selector: Selector, *, subject: str, sequence: str, phi: Sequence[str] = ()
) -> None:
    """Refuse a declared modality that the header of the series the other rules pick contradicts.

    Called when no series matches. Without the modality rule, the candidates are the series the
    selector would otherwise pick; when that is one series (or the other rules name one, e.g. by
    description or UID), the config and the DICOM header disagree about what the series is.

    Raises
    ------
    DicomError
        Naming the subject, the sequence, the tag Modality (0008,0060), the declared and the header values.
    """
    if not selector.modality:
        return
    others = replace(selector, modality=())
    clash = [g for g in groups if _matches(g, others) and _excluded_reason(g, others) is None]
    other_rules = any(
        v is not None
        for v in (others.series_description, others.series_uid, others.echo_number, others.acquisition_number)
    )
    if not clash or (len(clash) > 1 and not other_rules):
        return
    header = sorted({g.first.modality or "(empty)" for g in clash})
    raise DicomError(
        f"sequence {sequence}: declared modality {'/'.join(selector.modality)} (sequences.{sequence}.modality) "
        f"contradicts the DICOM header: {MODALITY_TAG} is {'/'.join(header)} in "
        f"{'; '.join(g.label(phi) for g in clash)}. Correct sequences.{sequence}.modality (or leave it out: "
        "the header's value is used) or select another series",
        subject=subject,
    )


def select_series(
    groups: Sequence[SeriesGroup], selector: Selector, *, subject: str, sequence: str, phi: Sequence[str] = ()
) -> SeriesGroup:
    """Return the one group the selector asks for; raise :class:`DicomError` for none or several."""
    matching = [g for g in groups if _matches(g, selector)]
    kept = []
    for g in matching:
        reason = _excluded_reason(g, selector)
        if reason:
            logger.info("sequence %s: ignoring %s: %s", sequence, g.label(phi), reason)
        else:
            kept.append(g)
    rules = {
        k: v
        for k, v in selector.as_dict().items()
        if k in ("series_description", "modality", "series_uid", "echo_number", "acquisition_number")
        and v not in (None, [])
    }
    if not kept:
        check_declared_modality(groups, selector, subject=subject, sequence=sequence, phi=phi)
        found = "; ".join(g.label(phi) for g in groups) or "no image series"
        raise DicomError(
            f"sequence {sequence}: no series matches {rules} "
            f"(excluding ImageType {list(selector.exclude_image_type)}). Series found: {found}",
            subject=subject,
        )
    if len(kept) > 1:
        uids = {g.series_uid for g in kept}
        if len(uids) == 1 and all("orientation" in g.split for g in kept):
            raise DicomError(
                f"sequence {sequence}: mixed orientations: series UID {kept[0].series_uid} holds "
                f"{len(kept)} slice orientations ({'; '.join(g.label(phi) for g in kept)}); "
                "a volume needs one orientation",
                subject=subject,
            )
        raise DicomError(
            f"sequence {sequence}: {len(kept)} series match {rules}: "
            f"{'; '.join(g.label(phi) for g in kept)}. Narrow the selector "
            "(series_description, modality, series_uid, echo_number or acquisition_number)",
            subject=subject,
        )
    chosen = kept[0]
    logger.info("sequence %s: selected %s", sequence, chosen.label(phi))
    return chosen
