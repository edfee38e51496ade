"""IBSI-2 phase-2 compliance: intensity statistics of filtered images of the IBSI CT phantom, through medpipe.

Phase 2 of IBSI-2 gives consensus values (``reference_feature_values/reference_values.csv``: ``filter_id;feature;
feature_tag;consensus_value;tolerance``) of the 18 intensity-statistics features of filtered images of the IBSI-1
CT phantom, for 18 configurations: 1.A-9.B, A = 2D (slice by slice), B = 3D. This module computes them as medpipe's
extraction does (:func:`medpipe.radiomics.extract.compute_features`: medpipe's IBSI interpolation and
re-segmentation, then pyradiomics' ``getLoGImage`` / ``getWaveletImage`` and first-order features on the pre-cropped
image, mapped to IBSI codes by :mod:`medpipe.radiomics.ibsi`) for the configurations pyradiomics can express, and
counts the features within ``consensus_value +/- tolerance``.

Settings (:data:`CONFIGS`, :data:`SETTINGS`), transcribed from MIRP (github.com/oncoray/mirp,
``test/ibsi_2_feature_test.py`` at d8a6a72, v2.3.4), which the IBSI reference manual (arXiv 2006.05470, chapter
"Convolutional filters", phase 2) defines:

* 3D (B): image interpolated to 1 mm isotropic voxels with a cubic B-spline (``spline_order=3``, no anti-aliasing),
  on the grid centred on the original one; intensities rounded to integer HU; the mask interpolated linearly and
  kept at >= 0.5. 2D (A): no interpolation, filters applied to each axial slice.
* re-segmentation range [-1000, 400] HU (the intensity mask); features of the response map inside it; the whole
  image is filtered (``crop_around_roi=False``), mirror padding (MIRP / scipy ``reflect``).
* filters: 1 none; 2 mean, support 5; 3 LoG, sigma 1.5 mm, cut-off 4 sigma; 4 Laws L5E5 / L5E5E5 energy (delta 7),
  rotation invariant (max pooling); 5 Gabor (sigma 5 mm, gamma 1.5, lambda 2 mm, 22.5 degree steps, modulus,
  rotation invariant); 6 Daubechies 3 LH (2D) / LLH (3D), level 1, rotation invariant (mean pooling); 7 Daubechies 3
  HH / HHH at level 2, rotation invariant; 8 / 9 Simoncelli wavelet at level 1 / 2.

Note the numbering differs from phase 1: phase-2 LoG is 3.A / 3.B and the separable wavelets are 6.x / 7.x.

pyradiomics expresses 1.A, 1.B (no filter) and 3.B (3D LoG; its border replication instead of mirror padding does
not reach the ROI, which lies more than 10 voxels inside the pre-crop and the image). It has no 2D LoG (3.A), no
mean, Laws, Gabor or Simoncelli filter and no rotation invariance (6.x, 7.x). pyradiomics has no median absolute
deviation (IBSI N72L) and no quartile coefficient of dispersion (9S40), so at most 16 of the 18 features are computed.

pyradiomics' LoG is scale-normalised (phase 1, :mod:`medpipe.radiomics.ibsi2`): its map is (sigma / spacing)^2 =
2.25 times IBSI's here. :func:`check_all` reports the raw features and, separately, the features of the map divided
by that factor (:func:`rescaled`, exact for these statistics), never the corrected count as the result.

Evidence that the settings are right: a scipy / pywt implementation of them reproduces all 18 consensus values of
1.A-3.B and 6.A-7.B (tests/radiomics/test_ibsi2_phase2.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medpipe.core.errors import DataError
from medpipe.core.io import read_sitk
from medpipe.radiomics.ibsi2 import Status
from medpipe.radiomics.ibsi_preprocess import IbsiSettings

logger = logging.getLogger(__name__)

#: IBSI feature tag of the reference table -> IBSI code (None: pyradiomics computes no such feature).
FEATURE_CODES: dict[str, str | None] = {
    "stat_mean": "Q4LE",
    "stat_var": "ECT3",
    "stat_skew": "KE2A",
    "stat_kurt": "IPH6",
    "stat_median": "Y12H",
    "stat_min": "1GSF",
    "stat_p10": "QG58",
    "stat_p90": "8DWT",
    "stat_max": "84IY",
    "stat_iqr": "SALO",
    "stat_range": "2OJQ",
    "stat_mad": "4FUA",
    "stat_rmad": "1128",
    "stat_medad": None,  # N72L, median absolute deviation: not in pyradiomics
    "stat_cov": "7TET",
    "stat_qcod": None,  # 9S40, quartile coefficient of dispersion: not in pyradiomics
    "stat_energy": "N8CA",
    "stat_rms": "5ZWQ",
}

#: Power of the intensity scale in each feature: ``f(c * x) = c**power * f(x)`` for c > 0.
SCALE_POWER: dict[str, int] = {
    **{tag: 1 for tag in FEATURE_CODES},
    **{"stat_var": 2, "stat_energy": 2, "stat_skew": 0, "stat_kurt": 0, "stat_cov": 0, "stat_qcod": 0},
}

#: IBSI processing of the two configurations (medpipe section of a params file).
SETTINGS: dict[str, IbsiSettings] = {
    "A": IbsiSettings(round_intensities=True, resegment_range=(-1000.0, 400.0), bin_start=-1000.0),
    "B": IbsiSettings(
        spacing_mm=(1.0, 1.0, 1.0),
        interpolator="bspline",
        round_intensities=True,
        mask_threshold=0.5,
        resegment_range=(-1000.0, 400.0),
        bin_start=-1000.0,
    ),
}

Family = Literal["none", "mean", "log", "laws", "gabor", "wavelet", "simoncelli"]


@dataclass(frozen=True)
class Phase2Config:
    """One phase-2 configuration and what pyradiomics gives for it (checked by tests/radiomics)."""

    filter_id: str  # "3.B"
    family: Family
    setting: str  # the filter in words
    recorded: Status
    recorded_within: int | None = None  # features within tolerance, pyradiomics as medpipe runs it
    recorded_corrected: int | None = None  # LoG: the same after dividing the map by its sigma^2 factor
    reason: str = ""  # why not expressible / not offered
    sigma_mm: float | None = None  # LoG
    level: int = 1  # wavelet decomposition level

    @property
    def dims(self) -> Literal[2, 3]:
        """2 for the A (slice-by-slice) configurations, 3 for B."""
        return 2 if self.filter_id.endswith("A") else 3


_NO_INVARIANCE = "rotation invariance (mean pooling over rotations): pyradiomics has none"
_NOT_OFFERED = "pyradiomics (so medpipe) offers no {} filter"


def _pair(n: int, family: Family, setting: str | tuple[str, str], **kw: Any) -> tuple[Phase2Config, Phase2Config]:
    """Configurations n.A (2D, ``a`` overrides) and n.B (3D, ``b``); ``setting`` may differ between them."""
    a, b = kw.pop("a", {}), kw.pop("b", {})
    text_a, text_b = (setting, setting) if isinstance(setting, str) else setting
    return (
        Phase2Config(f"{n}.A", family, f"{text_a}, 2D", **{**kw, **a}),
        Phase2Config(f"{n}.B", family, f"{text_b}, 3D at 1 mm", **{**kw, **b}),
    )


_LOG_2D = "2D LoG: pyradiomics' LoG is 3D only (getLoGImage ignores force2D)"

#: The 18 phase-2 configurations.
CONFIGS: tuple[Phase2Config, ...] = (
    *_pair(1, "none", "no filter", recorded="pass", a={"recorded_within": 16}, b={"recorded_within": 16}),
    *_pair(2, "mean", "mean, support 5 voxels", recorded="not offered", reason=_NOT_OFFERED.format("mean")),
    *_pair(
        3,
        "log",
        "LoG, sigma 1.5 mm, cut-off 4 sigma",
        sigma_mm=1.5,
        a={"recorded": "not expressible", "reason": _LOG_2D},
        b={"recorded": "fail", "recorded_within": 3, "recorded_corrected": 15},
    ),
    *_pair(
        4,
        "laws",
        ("Laws L5E5 energy, rotation invariant", "Laws L5E5E5 energy, rotation invariant"),
        recorded="not offered",
        reason=_NOT_OFFERED.format("Laws"),
    ),
    *_pair(5, "gabor", "Gabor, rotation invariant", recorded="not offered", reason=_NOT_OFFERED.format("Gabor")),
    *_pair(
        6,
        "wavelet",
        ("wavelet db3 LH, level 1, rotation invariant", "wavelet db3 LLH, level 1, rotation invariant"),
        recorded="not expressible",
        reason=_NO_INVARIANCE,
    ),
    *_pair(
        7,
        "wavelet",
        ("wavelet db3 HH, level 2, rotation invariant", "wavelet db3 HHH, level 2, rotation invariant"),
        recorded="not expressible",
        level=2,
        reason=_NO_INVARIANCE + ", and at level 2 no a trous dilation (pyradiomics repeats the level-1 filters)",
    ),
    *_pair(
        8, "simoncelli", "Simoncelli wavelet, level 1", recorded="not offered", reason=_NOT_OFFERED.format("Simoncelli")
    ),
    *_pair(
        9, "simoncelli", "Simoncelli wavelet, level 2", recorded="not offered", reason=_NOT_OFFERED.format("Simoncelli")
    ),
)

BY_ID: dict[str, Phase2Config] = {c.filter_id: c for c in CONFIGS}

#: pyradiomics image type of each configuration it expresses.
IMAGE_TYPES: dict[str, str] = {"1.A": "original", "1.B": "original", "3.B": "log-sigma-1-5-mm-3D"}


@dataclass(frozen=True)
class Phase2Result:
    """Outcome of one configuration: features within tolerance and the largest deviation (in tolerances)."""

    filter_id: str
    setting: str
    status: Status
    n_within: int | None = None
    n_computed: int | None = None
    n_features: int = len(FEATURE_CODES)
    worst_feature: str = ""
    max_deviation: float | None = None  # |value - consensus| / tolerance of worst_feature
    corrected_within: int | None = None  # LoG: after dividing the map by its sigma^2 factor
    corrected_worst_feature: str = ""
    corrected_max_deviation: float | None = None
    reason: str = ""


def ct_phantom(data_root: str | Path) -> tuple[Path, Path]:
    """NIfTI image and mask of the IBSI-1 CT phantom under the shared ``data/`` folder."""
    base = Path(data_root) / "ibsi_phantoms" / "ibsi_1_ct_radiomics_phantom" / "nifti"
    return base / "image" / "phantom.nii.gz", base / "mask" / "mask.nii.gz"


def reference_path(data_root: str | Path) -> Path:
    """The phase-2 consensus table (``reference_feature_values/reference_values.csv``)."""
    return Path(data_root) / "ibsi_phantoms" / "ibsi_2_reference" / "reference_feature_values" / "reference_values.csv"


def load_reference(path: str | Path) -> pd.DataFrame:
    """The consensus table, indexed by (filter_id, feature_tag); every configuration must have the 18 features."""
    try:
        table = pd.read_csv(path, sep=";")
    except (OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read the IBSI-2 phase-2 reference table: {exc}", path=path) from exc
    needed = {"filter_id", "feature_tag", "consensus_value", "tolerance"}
    if not needed <= set(table.columns):
        raise DataError(f"columns {sorted(table.columns)} lack {sorted(needed - set(table.columns))}", path=path)
    for filter_id, rows in table.groupby("filter_id"):
        if set(rows["feature_tag"]) != set(FEATURE_CODES) or len(rows) != len(FEATURE_CODES):
            raise DataError(
                f"filter {filter_id}: features {sorted(rows['feature_tag'])} are not the 18 IBSI statistics", path=path
            )
    return table.set_index(["filter_id", "feature_tag"]).sort_index()


def pyradiomics_params(setting: Mapping[str, Any], configs: Iterable[Phase2Config]) -> dict[str, Any]:
    """pyradiomics params (first order only) of the configurations: Original, plus a LoG image per sigma."""
    sigmas = sorted({float(c.sigma_mm) for c in configs if c.family == "log" and c.sigma_mm is not None})
    image_types: dict[str, Any] = {"Original": {}}
    if sigmas:
        image_types["LoG"] = {"sigma": sigmas}
    return {"imageType": image_types, "featureClass": {"firstorder": None}, "setting": dict(setting)}


def pyradiomics_values(
    data_root: str | Path, dims: Literal[2, 3], setting: Mapping[str, Any]
) -> dict[str, dict[str, float | None]]:
    """IBSI statistics (feature tag -> value, None where pyradiomics has none) per image type, as medpipe extracts.

    Parameters
    ----------
    data_root
        The shared ``data/`` folder.
    dims
        2: configuration A settings (no interpolation), 3: B (1 mm B-spline).
    setting
        The ``setting`` section of the params file pyradiomics gets (e.g. ``config/radiomics/ct.yaml``'s).
    """
    from medpipe.radiomics.extract import compute_features

    configs = [c for c in CONFIGS if c.dims == dims and c.filter_id in IMAGE_TYPES]
    image_path, mask_path = ct_phantom(data_root)
    params = pyradiomics_params(setting, configs)
    _, by_type = compute_features(
        read_sitk(image_path),
        read_sitk(mask_path),
        params,
        SETTINGS["A" if dims == 2 else "B"],
        subject="IBSI CT phantom",
    )
    return {
        image_type: {tag: (None if code is None else codes.get(code)) for tag, code in FEATURE_CODES.items()}
        for image_type, codes in by_type.items()
    }


def rescaled(values: Mapping[str, float | None], factor: float) -> dict[str, float | None]:
    """The statistics of the intensities divided by ``factor`` (> 0), from those of the intensities themselves."""
    if not factor > 0:
        raise DataError(f"rescaling factor {factor} is not positive")
    return {tag: None if v is None else v / factor ** SCALE_POWER[tag] for tag, v in values.items()}


def compare(values: Mapping[str, float | None], reference: pd.DataFrame, filter_id: str) -> pd.DataFrame:
    """Per feature: value, consensus, tolerance, ``within`` (``|value - consensus| <= tolerance``), deviation.

    ``deviation`` is ``|value - consensus| / tolerance``; a feature without a value is not within tolerance.
    """
    rows = reference.loc[filter_id]
    records = []
    for tag, row in rows.iterrows():
        value = values.get(str(tag))
        ref, tol = float(row["consensus_value"]), float(row["tolerance"])
        dev = math.inf if value is None or not math.isfinite(value) else abs(value - ref) / tol
        records.append(
            {
                "feature_tag": tag,
                "value": value,
                "consensus": ref,
                "tolerance": tol,
                "within": dev <= 1.0,
                "deviation": dev,
            }
        )
    return pd.DataFrame.from_records(records)


def _worst(table: pd.DataFrame) -> tuple[int, str, float]:
    """Features within tolerance, and the computed feature deviating most (in tolerances)."""
    computed = table[table["value"].notna()]
    worst = computed.loc[computed["deviation"].idxmax()]
    return int(table["within"].sum()), str(worst["feature_tag"]), float(worst["deviation"])


def summarise(config: Phase2Config, table: pd.DataFrame, corrected: pd.DataFrame | None = None) -> Phase2Result:
    """Result of one expressed configuration: ``pass`` when every feature pyradiomics computes is within tolerance."""
    n_within, worst, dev = _worst(table)
    n_computed = int(table["value"].notna().sum())
    status: Status = "pass" if n_within == n_computed else "fail"
    fix: dict[str, Any] = {}
    if corrected is not None:
        fix = dict(
            zip(
                ("corrected_within", "corrected_worst_feature", "corrected_max_deviation"),
                _worst(corrected),
                strict=True,
            )
        )
    missing = ", ".join(str(t) for t in table.loc[table["value"].isna(), "feature_tag"])
    reason = f"not computed by pyradiomics: {missing}" if missing else ""
    return Phase2Result(
        config.filter_id, config.setting, status, n_within, n_computed, len(table), worst, dev, reason=reason, **fix
    )


def log_factor(config: Phase2Config, spacing_mm: float = 1.0) -> float:
    """pyradiomics' LoG scale normalisation (sigma / spacing)^2 for a LoG configuration."""
    return (float(config.sigma_mm or 0.0) / spacing_mm) ** 2


def check_all(data_root: str | Path, setting: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Records (:class:`Phase2Result` fields) of the 18 configurations, pyradiomics run as medpipe runs it."""
    reference = load_reference(reference_path(data_root))
    values = {dims: pyradiomics_values(data_root, dims, setting) for dims in (2, 3)}
    records = []
    for config in CONFIGS:
        if config.filter_id not in IMAGE_TYPES:
            records.append(
                asdict(Phase2Result(config.filter_id, config.setting, config.recorded, reason=config.reason))
            )
            continue
        measured = values[config.dims][IMAGE_TYPES[config.filter_id]]
        table = compare(measured, reference, config.filter_id)
        corrected = None
        if config.family == "log":
            corrected = compare(rescaled(measured, log_factor(config)), reference, config.filter_id)
        result = summarise(config, table, corrected)
        logger.info(
            "IBSI-2 phase 2 %s: %s, %s/%d within tolerance",
            config.filter_id,
            result.status,
            result.n_within,
            result.n_features,
        )
        records.append(asdict(result))
    return records


def _result_text(rec: Mapping[str, Any]) -> str:
    if rec.get("n_within") is None:
        return f"{rec['status']}: {rec['reason']}"
    text = (
        f"{rec['status']}, {rec['n_within']}/{rec['n_features']} within tolerance ({rec['n_computed']} computed); "
        f"largest deviation {rec['worst_feature']} {rec['max_deviation']:.3g} x tolerance"
    )
    if rec.get("corrected_within") is not None:
        text += (
            f"; divided by the sigma^2 factor: {rec['corrected_within']}/{rec['n_features']}, largest "
            f"{rec['corrected_worst_feature']} {rec['corrected_max_deviation']:.3g} x tolerance"
        )
    return text + (f" ({rec['reason']})" if rec.get("reason") else "")


def markdown_table(records: Iterable[Mapping[str, Any]]) -> str:
    """The records as a markdown table: filter ID, setting, pyradiomics result."""
    lines = ["| filter ID | filter and setting | pyradiomics (as medpipe runs it) |", "|---|---|---|"]
    lines += [f"| {rec['filter_id']} | {rec['setting']} | {_result_text(rec)} |" for rec in records]
    return "\n".join(lines) + "\n"
