"""Body-weight SUV (SUVbw) of a PET series, computed from its DICOM headers.

``sequences.<name>.suv: true`` makes the convert stage store SUVbw (g/mL) instead of the activity
concentration (Bq/mL) of a PET series: every voxel of dcm2niix's output (rescale slope/intercept applied)
is multiplied by ::

    factor = PatientWeight [g] / (RadionuclideTotalDose [Bq] * 2 ** (-decay_time / RadionuclideHalfLife))

The rule is QIBA's vendor-neutral SUV pseudo-code (QIBA wiki, "Standardized Uptake Value (SUV)"; the logic of
Cornerstone's ``calculate-suv``), on the attributes of the DICOM PET Series and PET Isotope modules:

* Units (0054,1001) must be BQML. GML (the voxels already are SUVbw), CNTS and other units are refused.
* Decay Correction (0054,1102) START: the images are decay corrected to the acquisition start, so the dose is
  decayed from the injection to the scan reference time. ADMIN: they are corrected to the administration time
  already; decay time 0 (QIBA's pseudo-code covers START only; MITK's SUV helper treats ADMIN so).
  NONE is refused: each frame would need its own correction from its own acquisition time.
* Corrected Image (0028,0051) must contain DECY and ATTN.
* Reference time (START): SeriesDate/SeriesTime (0008,0021/0031) when it is not after the earliest
  AcquisitionDate/AcquisitionTime (0008,0022/0032) of the series' images. Otherwise the series is post-processed
  and its series time is when it was made: GE's private scan date/time (0009,100D, creator GEMS_PETD_01) when
  present, else the earliest acquisition date/time (QIBA's fallback; Siemens multi-injection series may need the
  frame-based back-computation, which is not done here).
* Injection time: RadiopharmaceuticalStartDateTime (0018,1078) when present (the standard deprecates the
  time-only attribute in its favour); else RadiopharmaceuticalStartTime (0018,1072) on the reference date, or
  on the day before when that would be after the reference time (a scan crossing midnight). A negative decay
  time, or one over :data:`MAX_HALF_LIVES` half-lives, is refused: a date or time is wrong.
* RadionuclideTotalDose (0018,1074, as recorded: no residual-syringe correction) and RadionuclideHalfLife
  (0018,1075) from the first item of the Radiopharmaceutical Information Sequence (0054,0016); PatientWeight
  (0010,1030) in kg. Each must be a positive number.

Messages name tags and values of units and corrections, never a date or an identifying value; the record
(:class:`SuvRecord`, written to the convert sidecar) holds times of day, no dates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from medpipe.core.errors import ConfigError, DicomError
from medpipe.core.records import MODALITY_TAG

logger = logging.getLogger(__name__)

#: Longest decay time accepted, in half-lives (the dose decayed to below 0.1 %): beyond it a date is wrong.
MAX_HALF_LIVES = 10.0
#: PatientWeight (kg) at or above which the value is taken for grams or a typing error.
MAX_WEIGHT_KG = 1000.0
#: What the record's ``method`` says.
METHOD = "SUVbw = PatientWeight / decay-corrected RadionuclideTotalDose (QIBA vendor-neutral pseudo-code)"
_GE_PET_CREATOR = "GEMS_PETD_01"
_GE_SCAN_DATETIME = "GE private scan date/time (0009,100D, GEMS_PETD_01)"
_SERIES_TIME = "SeriesDate/SeriesTime (0008,0021/0031)"
_ACQUISITION_TIME = "earliest AcquisitionDate/AcquisitionTime (0008,0022/0032)"
#: Attributes that every image of one series must share.
_SERIES_LEVEL = ("Units", "DecayCorrection", "CorrectedImage", "PatientWeight", "SeriesDate", "SeriesTime")


def tag_name(keyword: str) -> str:
    """``Keyword (gggg,eeee)``, the way messages name a DICOM attribute."""
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class SuvRecord:
    """The SUVbw scale factor of one PET series and the header values it came from.

    Attributes
    ----------
    factor
        SUVbw per Bq/mL (g/Bq): SUV = activity concentration x factor.
    weight_kg, dose_bq, half_life_s
        PatientWeight, RadionuclideTotalDose, RadionuclideHalfLife.
    decay_time_s
        Reference time minus injection time (0 for DecayCorrection ADMIN).
    injection_time, reference_time
        Times of day (``HH:MM:SS``), no dates; ``None`` when the header has no injection time (ADMIN only).
    decay_correction, units
        The header's Decay Correction (START or ADMIN) and Units (BQML).
    injection_source, reference_source
        The attributes (and rule) the two times came from.
    """

    factor: float
    weight_kg: float
    dose_bq: float
    half_life_s: float
    decay_time_s: float
    injection_time: str | None
    reference_time: str | None
    decay_correction: str
    units: str
    injection_source: str
    reference_source: str

    def to_json(self) -> dict[str, Any]:
        """The sidecar's ``suv`` object: the fields, the method and the units of the stored image."""
        return {**asdict(self), "method": METHOD, "image_units": "g/ml (SUVbw)"}


@dataclass(frozen=True)
class _Where:
    """Subject, sequence and series of a check, for the messages."""

    subject: str
    sequence: str
    label: str

    def error(self, name: str, problem: str, fix: str = "") -> DicomError:
        option = f"sequences.{self.sequence}.suv"
        tail = fix if option in fix else f"{fix or 'correct the export'}, or set {option}: false"
        return DicomError(
            f"sequence {self.sequence}: body-weight SUV ({option}: true) needs {name} of {self.label}, "
            f"which {problem}; {tail}",
            subject=self.subject,
        )


def _value(ds: Dataset, keyword: str) -> Any:
    """The attribute's value, ``None`` when absent or empty."""
    value = ds.get(keyword)
    return None if value is None or str(value).strip() == "" else value


def _text(raw: Any) -> str:
    return (raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)).strip().rstrip("\x00")


def _positive(ds: Dataset, keyword: str, where: _Where, *, unit: str, upper: float = math.inf) -> float:
    """A positive number (below ``upper``) from ``ds``; DicomError naming the tag otherwise."""
    raw = _value(ds, keyword)
    if raw is None:
        raise where.error(tag_name(keyword), "is missing", f"enter it ({unit}) in the DICOM header")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise where.error(tag_name(keyword), "is not a number") from None
    if not (0 < value < upper):
        limit = "" if math.isinf(upper) else f" and below {upper:g}"
        raise where.error(tag_name(keyword), f"is {value:g} {unit} (expected above 0{limit})")
    return value


def _check_corrections(ds: Dataset, where: _Where) -> tuple[str, str]:
    """Units BQML, Decay Correction START/ADMIN, Corrected Image with DECY and ATTN; returns units and decay."""
    units = _text(_value(ds, "Units") or "").upper()
    if units != "BQML":
        fix = "the voxels already are body-weight SUV (g/mL): set sequences.{s}.suv: false to keep them as they are"
        problem = "is missing" if not units else f"is {units}, not BQML (Bq/mL)"
        raise where.error(tag_name("Units"), problem, fix.format(s=where.sequence) if units == "GML" else "")
    decay = _text(_value(ds, "DecayCorrection") or "").upper()
    if decay not in ("START", "ADMIN"):
        problem = "is missing" if not decay else f"is {decay}, not START or ADMIN"
        fix = "frames without decay correction need a per-frame correction that medpipe does not do"
        raise where.error(tag_name("DecayCorrection"), problem, fix if decay == "NONE" else "")
    raw = _value(ds, "CorrectedImage") or []
    corrected = {_text(v).upper() for v in ([raw] if isinstance(raw, str | bytes) else raw)}
    missing = sorted({"ATTN", "DECY"} - corrected)
    if missing:
        raise where.error(tag_name("CorrectedImage"), f"lacks {' and '.join(missing)}", "SUV needs corrected images")
    return units, decay


def _check_one_series(headers: Sequence[Dataset], where: _Where) -> None:
    """Refuse images of one series that disagree about a series-level attribute."""
    for keyword in _SERIES_LEVEL:
        values = {str(ds.get(keyword)) for ds in headers}
        if len(values) > 1:
            raise where.error(tag_name(keyword), f"differs between its {len(headers)} images ({len(values)} values)")


def _parse(raw: Any, name: str, kind: type[DA] | type[TM] | type[DT], where: _Where) -> Any:
    """A DICOM DA/TM/DT value as date/time/datetime; the message never shows the value (dates identify)."""
    if raw is None:
        raise where.error(name, "is missing")
    text = _text(raw)
    try:
        parsed = kind(text)
    except (TypeError, ValueError):
        parsed = None
    if kind is DT and len(text) - len(text.lstrip("0123456789")) < 12:
        parsed = None  # a DT without hours and minutes is no injection time
    if parsed is None:
        detail = " with hours and minutes" if kind is DT else ""
        raise where.error(name, f"is not a valid DICOM {kind.__name__} value{detail}")
    return parsed


def _naive(moment: datetime, ds: Dataset, where: _Where) -> datetime:
    """``moment`` in the series' local time: a UTC offset in a DT is converted to TimezoneOffsetFromUTC's."""
    if moment.tzinfo is None:
        return moment
    offset = _value(ds, "TimezoneOffsetFromUTC")
    if offset is None:
        return moment.replace(tzinfo=None)
    local = _parse(f"19700101000000{_text(offset)}", tag_name("TimezoneOffsetFromUTC"), DT, where).tzinfo
    return moment.astimezone(local).replace(tzinfo=None)


def _date_time(ds: Dataset, date_keyword: str, time_keyword: str, where: _Where) -> datetime:
    day: date = _parse(_value(ds, date_keyword), tag_name(date_keyword), DA, where)
    clock: time = _parse(_value(ds, time_keyword), tag_name(time_keyword), TM, where)
    return datetime.combine(day, clock)


def _ge_scan_datetime(ds: Dataset, where: _Where) -> datetime | None:
    """GE's private scan date/time (0009,100D), ``None`` when the header has none."""
    try:
        raw = ds.private_block(0x0009, _GE_PET_CREATOR)[0x0D].value
    except KeyError:
        return None
    return _naive(_parse(raw, _GE_SCAN_DATETIME, DT, where), ds, where)


def _reference_time(headers: Sequence[Dataset], where: _Where) -> tuple[datetime, str]:
    """The time the images are decay corrected to (DecayCorrection START), and which rule gave it."""
    series = _date_time(headers[0], "SeriesDate", "SeriesTime", where)
    acquired = [
        _date_time(ds, "AcquisitionDate", "AcquisitionTime", where)
        for ds in headers
        if _value(ds, "AcquisitionDate") is not None and _value(ds, "AcquisitionTime") is not None
    ]
    earliest = min(acquired, default=None)
    if earliest is None or series <= earliest:
        return series, _SERIES_TIME
    later = f"(SeriesTime is after the {_ACQUISITION_TIME}: a post-processed series)"
    private = _ge_scan_datetime(headers[0], where)
    if private is not None:
        return private, f"{_GE_SCAN_DATETIME} {later}"
    return earliest, f"{_ACQUISITION_TIME} {later}"


def _injection_time(item: Dataset, ds: Dataset, reference: datetime, where: _Where) -> tuple[datetime, str, str]:
    """Injection date and time (DecayCorrection START), the attribute and the rule they came from."""
    if _value(item, "RadiopharmaceuticalStartDateTime") is not None:
        name = tag_name("RadiopharmaceuticalStartDateTime")
        return _naive(_parse(item.RadiopharmaceuticalStartDateTime, name, DT, where), ds, where), name, name
    name = tag_name("RadiopharmaceuticalStartTime")
    if _value(item, "RadiopharmaceuticalStartTime") is None:
        raise where.error(name, f"is missing (and so is {tag_name('RadiopharmaceuticalStartDateTime')})")
    start = datetime.combine(reference.date(), _parse(item.RadiopharmaceuticalStartTime, name, TM, where))
    if start <= reference:
        return start, name, f"{name} on the reference date"
    return start - timedelta(days=1), name, f"{name} on the day before the reference date (scan after midnight)"


def _decay_time(headers: Sequence[Dataset], item: Dataset, half_life: float, where: _Where) -> dict[str, Any]:
    """Decay time (s), the two times of day and their sources, for DecayCorrection START."""
    reference, reference_source = _reference_time(headers, where)
    injection, name, injection_source = _injection_time(item, headers[0], reference, where)
    seconds = (reference - injection).total_seconds()
    if not 0 <= seconds <= MAX_HALF_LIVES * half_life:
        hours = f"{abs(seconds) / 3600:.1f} h {'after' if seconds < 0 else 'before'}"
        raise where.error(
            name,
            f"puts the injection {hours} the reference time {reference_source} (half-life {half_life:g} s)",
            "check the injection and series dates and times (de-identification may have shifted one)",
        )
    return {
        "decay_time_s": seconds,
        "injection_time": injection.time().isoformat(),
        "reference_time": reference.time().isoformat(),
        "injection_source": injection_source,
        "reference_source": reference_source,
    }


def _admin_time(item: Dataset, ds: Dataset, where: _Where) -> dict[str, Any]:
    """DecayCorrection ADMIN: decay time 0; the injection time of day, when the header has one."""
    clock: str | None = None
    source = "none in the header (not needed: DecayCorrection ADMIN)"
    for keyword, kind in (("RadiopharmaceuticalStartDateTime", DT), ("RadiopharmaceuticalStartTime", TM)):
        if _value(item, keyword) is not None:
            parsed = _parse(item.get(keyword), tag_name(keyword), kind, where)
            clock = (_naive(parsed, ds, where).time() if kind is DT else parsed).isoformat()
            source = tag_name(keyword)
            break
    reference = "the administration time (DecayCorrection ADMIN: images decay corrected to it)"
    return {
        "decay_time_s": 0.0,
        "injection_time": clock,
        "reference_time": clock,
        "injection_source": source,
        "reference_source": reference,
    }


def suv_scale_factor(
    headers: Sequence[Dataset], *, subject: str, sequence: str, label: str = "the series"
) -> SuvRecord:
    """The SUVbw scale factor of one PET series (all its images' headers), by the rule in the module docstring.

    Parameters
    ----------
    headers
        The headers of the series' images (pixel data not needed); the first holds the series attributes.
    subject, sequence, label
        Named in messages (``label``: the series description, identifying values redacted).

    Returns
    -------
    SuvRecord
        The factor and the header values it came from.

    Raises
    ------
    DicomError
        Naming subject, sequence and the tag (keyword and number) that is missing, unusable or inconsistent.
    """
    where = _Where(subject, sequence, label)
    if not headers:
        raise DicomError(f"sequence {sequence}: no DICOM headers to compute body-weight SUV from", subject=subject)
    _check_one_series(headers, where)
    first = headers[0]
    units, decay = _check_corrections(first, where)
    items = first.get("RadiopharmaceuticalInformationSequence")
    if not items:
        raise where.error(tag_name("RadiopharmaceuticalInformationSequence"), "is missing or empty")
    item = items[0]
    dose = _positive(item, "RadionuclideTotalDose", where, unit="Bq")
    half_life = _positive(item, "RadionuclideHalfLife", where, unit="s")
    weight = _positive(first, "PatientWeight", where, unit="kg", upper=MAX_WEIGHT_KG)
    times = _decay_time(headers, item, half_life, where) if decay == "START" else _admin_time(item, first, where)
    factor = weight * 1000.0 / (dose * 2.0 ** (-times["decay_time_s"] / half_life))
    logger.info(
        "sequence %s: SUVbw factor %.6g g/Bq (DecayCorrection %s, decay time %.0f s)",
        sequence,
        factor,
        decay,
        times["decay_time_s"],
    )
    return SuvRecord(
        factor=factor,
        weight_kg=weight,
        dose_bq=dose,
        half_life_s=half_life,
        decay_correction=decay,
        units=units,
        **times,
    )


def suv_requested(selector: Mapping[str, Any], *, subject: str, sequence: str) -> bool:
    """Whether ``sequences.<sequence>.suv`` is true; refused for a NIfTI input (it has no headers).

    Raises
    ------
    ConfigError
        For ``suv: true`` together with ``nifti``.
    """
    wanted = bool(selector.get("suv"))
    if wanted and selector.get("nifti"):
        raise ConfigError(
            f"sequences.{sequence}.suv: true needs the DICOM headers (units, dose, times, weight), but the sequence "
            f"arrives as NIfTI (sequences.{sequence}.nifti {selector['nifti']!r}): convert the PET from DICOM, or "
            f"set sequences.{sequence}.suv: false",
            subject=subject,
        )
    return wanted


def pet_suv(
    headers: Sequence[Dataset], *, modality: str, subject: str, sequence: str, label: str = "the series"
) -> SuvRecord:
    """:func:`suv_scale_factor` of a series whose Modality (0008,0060) must be PT.

    Raises
    ------
    DicomError
        For another modality (naming ``sequences.<sequence>.suv``), or from :func:`suv_scale_factor`.
    """
    if modality != "PT":
        raise DicomError(
            f"sequence {sequence}: sequences.{sequence}.suv is true, but {label} has {MODALITY_TAG} "
            f"{modality or '(empty)'}; body-weight SUV is for PET (PT) only: set sequences.{sequence}.suv: false",
            subject=subject,
        )
    return suv_scale_factor(headers, subject=subject, sequence=sequence, label=label)


def apply_suv(data: npt.NDArray[Any], record: SuvRecord) -> npt.NDArray[np.float32]:
    """Activity concentration (Bq/mL) to SUVbw: ``data x factor``, computed in float64, stored as float32."""
    return (np.asarray(data, dtype=np.float64) * record.factor).astype(np.float32)
