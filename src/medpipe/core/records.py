"""Per-case records that one stage writes and another reads: defined once, here.

The uncertainty record of the predict stage, ``results/predict/sub-X/sub-X_uncertainty.json``, is
written by :func:`medpipe.segment.infer.predict_case` and read by the review list
(:mod:`medpipe.audit.review`). Its JSON keys are the fields of :class:`UncertaintyRecord`::

    {"subject": "X", "score": 0.41, "threshold": 0.35, "flag": true,
     "reasons": ["mean uncertainty 0.410 > 0.35"], "agreement": 0.93, "min_agreement": 0.8,
     "n_members": 8, "predicted_volume_mm3": 5123.0}

The modality record of a converted image is written by the convert stage
(:mod:`medpipe.convert.dicom`, :mod:`medpipe.convert.nifti`) into the image's sidecar and read by every
later stage that treats CT, PET and MR differently (:func:`read_modality`). Its keys, at the top level
of the sidecar ``results/convert/sub-X/sub-X_<sequence>.json``, are those of :meth:`ModalityRecord.to_json`::

    {"modality": "CT", "modality_source": "dicom_header"}
    {"modality": "MR", "modality_source": "default",
     "modality_note": "NIfTI input without sequences.T1w.modality: assumed MR"}

The intensity profile of a normalised image is written by the preprocess stage
(:func:`medpipe.preprocess.normalise.normalise_image`) into the image's sidecar and read by the
domain-shift flags of the evaluate stage (:func:`read_intensity_profile`): the percentiles 1..99 of the
normalised intensities inside the brain (or body) mask, on the grid the statistics were taken on::

    {"intensity_profile": {"levels_percent": [1, ..., 99], "quantiles": [...], "n_voxels": 123456}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.sidecar import read_sidecar, write_json

#: File-name ending of an uncertainty record (``sub-X_uncertainty.json``).
UNCERTAINTY_SUFFIX = "_uncertainty.json"
_SUB_IN_NAME = re.compile(r"^sub-([A-Za-z0-9]+)_")


def uncertainty_path(results_dir: str | Path, subject: str) -> Path:
    """Where the predict stage writes the uncertainty record of ``subject`` under ``results_dir``."""
    return Path(results_dir) / UncertaintyRecord.stage / f"sub-{subject}" / f"sub-{subject}{UNCERTAINTY_SUFFIX}"


def is_uncertainty_record(path: str | Path) -> bool:
    """Whether ``path`` is named like an uncertainty record."""
    return Path(path).name.endswith(UNCERTAINTY_SUFFIX)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class UncertaintyRecord:
    """The predict stage's verdict on one case: uncertainty score and whether a human should look.

    Attributes
    ----------
    subject
        Subject ID.
    score
        Mean voxel-wise normalised entropy (0 = certain, 1 = uniform) over the predicted foreground.
    threshold
        ``segmentation.infer.uncertainty_threshold`` the score was compared with.
    flag
        ``True`` when the case is flagged for review (then ``reasons`` says why).
    reasons
        Human-readable reasons for the flag (empty when not flagged).
    agreement
        Mean Dice of the ensemble/TTA members' masks to the consensus mask.
    min_agreement
        ``segmentation.infer.min_agreement`` the agreement was compared with.
    n_members
        Number of ensemble members (models x mirrors).
    predicted_volume_mm3
        Volume of the predicted foreground.
    """

    stage: ClassVar[str] = "predict"

    subject: str
    score: float
    threshold: float
    flag: bool
    reasons: tuple[str, ...] = ()
    agreement: float | None = None
    min_agreement: float | None = None
    n_members: int | None = None
    predicted_volume_mm3: float | None = None

    @property
    def reason(self) -> str:
        """The reasons as one line (``""`` when there are none)."""
        return "; ".join(self.reasons)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (the keys are the field names)."""
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data

    @classmethod
    def from_json(cls, data: Any, *, subject: str | None = None, path: str | Path | None = None) -> UncertaintyRecord:
        """Rebuild a record from :meth:`to_json` output.

        Parameters
        ----------
        data
            The decoded JSON object. ``score``, ``threshold`` and ``flag`` are required; the other
            fields may be absent (records written by other tools).
        subject
            Subject ID used when ``data`` names none (e.g. taken from the file name).
        path
            The file ``data`` came from (error messages).

        Raises
        ------
        DataError
            When ``data`` is not an object or a required field is missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DataError("uncertainty record is not a JSON object", subject=subject, path=path)
        score, threshold, flag = _number(data.get("score")), _number(data.get("threshold")), data.get("flag")
        name = str(data.get("subject") or subject or "")
        bad = [k for k, ok in (("score", score is not None), ("threshold", threshold is not None)) if not ok]
        bad += [] if isinstance(flag, bool) else ["flag"]
        bad += [] if name else ["subject"]
        reasons = data.get("reasons") or []
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            bad.append("reasons")
        if bad or score is None or threshold is None:
            hint = "; written by an older medpipe: re-run the predict stage" if "flag_for_review" in data else ""
            raise DataError(
                f"uncertainty record lacks valid {', '.join(bad)} (keys: {sorted(data)}){hint}",
                subject=subject,
                path=path,
            )
        members = data.get("n_members")
        return cls(
            subject=name,
            score=score,
            threshold=threshold,
            flag=bool(flag),
            reasons=tuple(reasons),
            agreement=_number(data.get("agreement")),
            min_agreement=_number(data.get("min_agreement")),
            n_members=int(members) if isinstance(members, int) and not isinstance(members, bool) else None,
            predicted_volume_mm3=_number(data.get("predicted_volume_mm3")),
        )


def write_uncertainty(record: UncertaintyRecord, path: str | Path) -> Path:
    """Write ``record`` as sorted, indented JSON, atomically."""
    return write_json(record.to_json(), path)


def read_uncertainty(path: str | Path) -> UncertaintyRecord:
    """Read a record written by :func:`write_uncertainty` (the subject may also come from the file name).

    Raises
    ------
    DataError
        Naming the file when it cannot be read or is not an uncertainty record.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read uncertainty record: {exc}", path=path) from exc
    return UncertaintyRecord.from_json(data, subject=subject_from_name(path), path=path)


def subject_from_name(path: str | Path) -> str | None:
    """The subject ID in a ``sub-X_...`` file name, or ``None``."""
    match = _SUB_IN_NAME.match(Path(path).name)
    return match.group(1) if match else None


#: Modalities medpipe treats differently (DICOM Modality values): CT (Hounsfield units), MR, PT (PET).
MODALITIES = ("CT", "MR", "PT")
#: The DICOM attribute the modality of a DICOM input comes from (named in messages).
MODALITY_TAG = "Modality (0008,0060)"
#: Where a modality came from: the DICOM header, the config (``sequences.<name>.modality``), the NIfTI
#: default (MR, when nothing was declared) or a caller passing it directly (tests, benchmarks).
MODALITY_SOURCES = ("dicom_header", "config", "default", "caller")


@dataclass(frozen=True)
class ModalityRecord:
    """The imaging modality of one converted sequence and where it came from.

    Attributes
    ----------
    modality
        DICOM Modality value, upper case (``CT``, ``MR``, ``PT``; other DICOM values are kept as read).
    source
        One of :data:`MODALITY_SOURCES`.
    note
        Why a default was used (empty otherwise).
    """

    modality: str
    source: str = "caller"
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The sidecar fields: ``modality``, ``modality_source`` and, when set, ``modality_note``."""
        data: dict[str, Any] = {"modality": self.modality, "modality_source": self.source}
        if self.note:
            data["modality_note"] = self.note
        return data


def declared_modality(
    value: str | Sequence[str] | None, *, sequence: str, subject: str | None = None
) -> ModalityRecord:
    """The modality of a NIfTI input: ``sequences.<sequence>.modality``, or MR (with a note) when not declared.

    Parameters
    ----------
    value
        The config value: one of :data:`MODALITIES` (any case), a list holding one, or nothing.
    sequence, subject
        Named in the note and in errors.

    Raises
    ------
    ConfigError
        When several modalities or one medpipe does not know are declared (a NIfTI file carries no header
        to choose between them).
    """
    values = [value] if isinstance(value, str) else list(value or [])
    names = [str(v).upper() for v in values]
    if not names:
        note = f"NIfTI input without sequences.{sequence}.modality: assumed MR"
        return ModalityRecord(modality="MR", source="default", note=note)
    if len(names) > 1 or names[0] not in MODALITIES:
        raise ConfigError(
            f"sequences.{sequence}.modality: a NIfTI input needs exactly one of {list(MODALITIES)}, got {value!r}",
            subject=subject,
        )
    return ModalityRecord(modality=names[0], source="config")


def _image_sidecar(path: Path, subject: str | None) -> dict[str, Any]:
    """The sidecar of an image given as the image (``X.nii.gz``) or as its sidecar (``X.json``)."""
    return read_sidecar(path.with_suffix(".nii") if path.suffix == ".json" else path, subject=subject)


def read_modality(image: str | Path, *, subject: str | None = None) -> ModalityRecord:
    """The modality record in the sidecar of a converted image (``image`` or its ``.json``).

    Raises
    ------
    DataError
        When the sidecar has no valid modality record (written by an older medpipe: re-run convert).
    """
    path = Path(image)
    data = _image_sidecar(path, subject)
    modality, source = data.get("modality"), data.get("modality_source")
    if not isinstance(modality, str) or not modality or source not in MODALITY_SOURCES:
        raise DataError(
            f"sidecar records no modality (modality {modality!r}, modality_source {source!r}); it was written "
            "by an older medpipe: re-run the convert stage (snakemake --forcerun convert_sequence)",
            subject=subject,
            path=path,
        )
    return ModalityRecord(modality=modality.upper(), source=source, note=str(data.get("modality_note", "")))


#: Percent levels of an intensity profile (1, 2, ..., 99).
PROFILE_LEVELS = tuple(range(1, 100))
#: Sidecar key of the intensity profile.
PROFILE_KEY = "intensity_profile"


@dataclass(frozen=True)
class IntensityProfile:
    """Percentiles of an image's intensities inside its mask (the shape of its histogram).

    Attributes
    ----------
    quantiles
        Intensity at each of :data:`PROFILE_LEVELS` percent.
    n_voxels
        Voxels the percentiles were taken over.
    """

    quantiles: tuple[float, ...]
    n_voxels: int

    @classmethod
    def of(cls, values: npt.ArrayLike) -> IntensityProfile:
        """The profile of ``values`` (the intensities inside the mask; at least one, all finite)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size == 0 or not np.isfinite(x).all():
            raise DataError(f"an intensity profile needs finite values, got {x.size} values")
        q = np.percentile(x, PROFILE_LEVELS)
        return cls(quantiles=tuple(round(float(v), 6) for v in q), n_voxels=int(x.size))

    def to_json(self) -> dict[str, Any]:
        """The sidecar field (see the module docstring)."""
        return {
            PROFILE_KEY: {
                "levels_percent": list(PROFILE_LEVELS),
                "quantiles": list(self.quantiles),
                "n_voxels": self.n_voxels,
            }
        }


def read_intensity_profile(image: str | Path, *, subject: str | None = None) -> IntensityProfile:
    """The intensity profile in the sidecar of a normalised image (``image`` or its ``.json``).

    Raises
    ------
    DataError
        When the sidecar holds no valid profile (written by an older medpipe: re-run normalise).
    """
    path = Path(image)
    data = _image_sidecar(path, subject)
    record = data.get(PROFILE_KEY)
    ok = (
        isinstance(record, dict)
        and record.get("levels_percent") == list(PROFILE_LEVELS)
        and isinstance(record.get("quantiles"), list)
        and len(record["quantiles"]) == len(PROFILE_LEVELS)
        and all(_number(v) is not None for v in record["quantiles"])
        and isinstance(record.get("n_voxels"), int)
    )
    if not ok or not isinstance(record, dict):
        raise DataError(
            f"sidecar records no valid {PROFILE_KEY} (got {str(record)[:80]!r}); it was written by an older "
            "medpipe: re-run the normalise stage (snakemake --forcerun normalise)",
            subject=subject,
            path=path,
        )
    return IntensityProfile(quantiles=tuple(float(v) for v in record["quantiles"]), n_voxels=int(record["n_voxels"]))
