"""IBSI mapping of pyradiomics features and IBSI-compliant corrections.

pyradiomics implements most IBSI-1 features, but reports some of them by a different convention.
This module maps every pyradiomics feature that has an IBSI-1 counterpart to its IBSI code and name,
and derives the IBSI value from the raw pyradiomics values. Raw values are never overwritten: the
extraction table keeps both (:mod:`medpipe.radiomics.extract`).

Corrections (``correction`` column of :data:`IBSI_MAP` and :func:`ibsi_values`):

* ``excess``: IBSI reports excess kurtosis (IPH6), pyradiomics the plain kurtosis -> value - 3.
* ``axis``: IBSI computes the principal axis lengths (TDIC, P9VJ, 7J51) from the sample covariance of
  the voxel centres (N - 1 denominator); pyradiomics uses the population covariance (N) -> value
  * sqrt(N / (N - 1)), N = voxels of the morphological mask.
* ``shift``: pyradiomics adds ``voxelArrayShift`` c to the intensities before Energy and
  RootMeanSquared; IBSI energy (N8CA) is sum x^2 = E - 2 c N mean - N c^2 and RMS (5ZWQ) sqrt(energy / N).
* derived features that pyradiomics deprecated or never exposed, computed from other pyradiomics
  values of the same image type: GLCM dissimilarity (8S9J) = difference average; GLCM sum variance
  (OEEB) = cluster tendency; NGLDM normalised grey-level non-uniformity (5SPA) = GLN / N; NGLDM
  dependence count percentage (6XV8) = 1 (pyradiomics counts every voxel of the ROI, alpha = 0);
  compactness 1 (SKGS) = sphericity^1.5 / (6 pi); compactness 2 (BQWJ) = sphericity^3; spherical
  disproportion (KRCK) = 1 / sphericity; asphericity (25C7) = 1 / sphericity - 1; intensity
  coefficient of variation (7TET) = sqrt(variance) / mean.

Aggregation: pyradiomics averages GLCM and GLRLM features over the 13 directions (IBSI "3D,
averaged"; with ``force2D`` the 4 in-plane directions over all slices, "2.5D, direction-merged") and
builds one GLSZM/GLDM/NGTDM matrix for the volume (IBSI "3D"; with ``force2D`` "2.5D").

Bin numbering (intensity-dependent texture features) and the IBSI interpolation grid are not
algebraic corrections; they are handled before feature computation by
:mod:`medpipe.radiomics`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medpipe.core.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IbsiFeature:
    """One IBSI-1 feature that medpipe reports, and how it is obtained from pyradiomics."""

    code: str
    name: str
    family: str
    source: str  # pyradiomics "<class>_<Feature>" the value comes from
    correction: str = ""  # "" (value as is), "excess", "axis", "shift", or "derived:<rule>"


def _f(cls_feat: str, code: str, name: str, family: str, correction: str = "") -> tuple[str, IbsiFeature]:
    return code, IbsiFeature(code, name, family, cls_feat, correction)


#: IBSI code -> feature. Family names follow the IBSI reference table.
IBSI_MAP: dict[str, IbsiFeature] = dict(
    [
        # morphology (pyradiomics shape, computed on the morphological mask)
        _f("shape_MeshVolume", "RNU0", "Volume (mesh)", "morphology"),
        _f("shape_VoxelVolume", "YEKZ", "Volume (voxel counting)", "morphology"),
        _f("shape_SurfaceArea", "C0JK", "Surface area (mesh)", "morphology"),
        _f("shape_SurfaceVolumeRatio", "2PR5", "Surface to volume ratio", "morphology"),
        _f("shape_Sphericity", "QCFX", "Sphericity", "morphology"),
        _f("shape_Sphericity", "SKGS", "Compactness 1", "morphology", "derived:compactness1"),
        _f("shape_Sphericity", "BQWJ", "Compactness 2", "morphology", "derived:compactness2"),
        _f("shape_Sphericity", "KRCK", "Spherical disproportion", "morphology", "derived:disproportion"),
        _f("shape_Sphericity", "25C7", "Asphericity", "morphology", "derived:asphericity"),
        _f("shape_Maximum3DDiameter", "L0JK", "Maximum 3D diameter", "morphology"),
        _f("shape_MajorAxisLength", "TDIC", "Major axis length", "morphology", "axis"),
        _f("shape_MinorAxisLength", "P9VJ", "Minor axis length", "morphology", "axis"),
        _f("shape_LeastAxisLength", "7J51", "Least axis length", "morphology", "axis"),
        _f("shape_Elongation", "Q3CK", "Elongation", "morphology"),
        _f("shape_Flatness", "N17B", "Flatness", "morphology"),
        # intensity statistics (pyradiomics first order on the intensity mask, not discretised)
        _f("firstorder_Mean", "Q4LE", "Mean intensity", "intensity_statistics"),
        _f("firstorder_Variance", "ECT3", "Intensity variance", "intensity_statistics"),
        _f("firstorder_Skewness", "KE2A", "Intensity skewness", "intensity_statistics"),
        _f("firstorder_Kurtosis", "IPH6", "(Excess) intensity kurtosis", "intensity_statistics", "excess"),
        _f("firstorder_Median", "Y12H", "Median intensity", "intensity_statistics"),
        _f("firstorder_Minimum", "1GSF", "Minimum intensity", "intensity_statistics"),
        _f("firstorder_10Percentile", "QG58", "10th intensity percentile", "intensity_statistics"),
        _f("firstorder_90Percentile", "8DWT", "90th intensity percentile", "intensity_statistics"),
        _f("firstorder_Maximum", "84IY", "Maximum intensity", "intensity_statistics"),
        _f("firstorder_InterquartileRange", "SALO", "Intensity interquartile range", "intensity_statistics"),
        _f("firstorder_Range", "2OJQ", "Intensity range", "intensity_statistics"),
        _f(
            "firstorder_MeanAbsoluteDeviation",
            "4FUA",
            "Intensity-based mean absolute deviation",
            "intensity_statistics",
        ),
        _f(
            "firstorder_RobustMeanAbsoluteDeviation",
            "1128",
            "Intensity-based robust mean absolute deviation",
            "intensity_statistics",
        ),
        _f(
            "firstorder_Variance",
            "7TET",
            "Intensity-based coefficient of variation",
            "intensity_statistics",
            "derived:cov",
        ),
        _f("firstorder_Energy", "N8CA", "Intensity-based energy", "intensity_statistics", "shift"),
        _f("firstorder_RootMeanSquared", "5ZWQ", "Root mean square intensity", "intensity_statistics", "shift"),
        # intensity histogram (discretised)
        _f("firstorder_Entropy", "TLU2", "Discretised intensity entropy", "intensity_histogram"),
        _f("firstorder_Uniformity", "BJ5W", "Discretised intensity uniformity", "intensity_histogram"),
        # GLCM (3D averaged)
        _f("glcm_MaximumProbability", "GYBY", "Joint maximum", "glcm"),
        _f("glcm_JointAverage", "60VM", "Joint average", "glcm"),
        _f("glcm_SumSquares", "UR99", "Joint variance", "glcm"),
        _f("glcm_JointEntropy", "TU9B", "Joint entropy", "glcm"),
        _f("glcm_DifferenceAverage", "TF7R", "Difference average", "glcm"),
        _f("glcm_DifferenceVariance", "D3YU", "Difference variance", "glcm"),
        _f("glcm_DifferenceEntropy", "NTRS", "Difference entropy", "glcm"),
        _f("glcm_SumAverage", "ZGXS", "Sum average", "glcm"),
        _f("glcm_ClusterTendency", "OEEB", "Sum variance", "glcm", "derived:sum_variance"),
        _f("glcm_SumEntropy", "P6QZ", "Sum entropy", "glcm"),
        _f("glcm_JointEnergy", "8ZQL", "Angular second moment", "glcm"),
        _f("glcm_Contrast", "ACUI", "Contrast", "glcm"),
        _f("glcm_DifferenceAverage", "8S9J", "Dissimilarity", "glcm", "derived:dissimilarity"),
        _f("glcm_Id", "IB1Z", "Inverse difference", "glcm"),
        _f("glcm_Idn", "NDRX", "Normalised inverse difference", "glcm"),
        _f("glcm_Idm", "WF0Z", "Inverse difference moment", "glcm"),
        _f("glcm_Idmn", "1QCO", "Normalised inverse difference moment", "glcm"),
        _f("glcm_InverseVariance", "E8JP", "Inverse variance", "glcm"),
        _f("glcm_Correlation", "NI2N", "Correlation", "glcm"),
        _f("glcm_Autocorrelation", "QWB0", "Autocorrelation", "glcm"),
        _f("glcm_ClusterTendency", "DG8W", "Cluster tendency", "glcm"),
        _f("glcm_ClusterShade", "7NFM", "Cluster shade", "glcm"),
        _f("glcm_ClusterProminence", "AE86", "Cluster prominence", "glcm"),
        _f("glcm_Imc1", "R8DG", "Information correlation 1", "glcm"),
        _f("glcm_Imc2", "JN9H", "Information correlation 2", "glcm"),
        # GLRLM (3D averaged)
        _f("glrlm_ShortRunEmphasis", "22OV", "Short runs emphasis", "glrlm"),
        _f("glrlm_LongRunEmphasis", "W4KF", "Long runs emphasis", "glrlm"),
        _f("glrlm_LowGrayLevelRunEmphasis", "V3SW", "Low grey level run emphasis", "glrlm"),
        _f("glrlm_HighGrayLevelRunEmphasis", "G3QZ", "High grey level run emphasis", "glrlm"),
        _f("glrlm_ShortRunLowGrayLevelEmphasis", "HTZT", "Short run low grey level emphasis", "glrlm"),
        _f("glrlm_ShortRunHighGrayLevelEmphasis", "GD3A", "Short run high grey level emphasis", "glrlm"),
        _f("glrlm_LongRunLowGrayLevelEmphasis", "IVPO", "Long run low grey level emphasis", "glrlm"),
        _f("glrlm_LongRunHighGrayLevelEmphasis", "3KUM", "Long run high grey level emphasis", "glrlm"),
        _f("glrlm_GrayLevelNonUniformity", "R5YN", "Grey level non-uniformity", "glrlm"),
        _f("glrlm_GrayLevelNonUniformityNormalized", "OVBL", "Normalised grey level non-uniformity", "glrlm"),
        _f("glrlm_RunLengthNonUniformity", "W92Y", "Run length non-uniformity", "glrlm"),
        _f("glrlm_RunLengthNonUniformityNormalized", "IC23", "Normalised run length non-uniformity", "glrlm"),
        _f("glrlm_RunPercentage", "9ZK5", "Run percentage", "glrlm"),
        _f("glrlm_GrayLevelVariance", "8CE5", "Grey level variance", "glrlm"),
        _f("glrlm_RunVariance", "SXLW", "Run length variance", "glrlm"),
        _f("glrlm_RunEntropy", "HJ9O", "Run entropy", "glrlm"),
        # GLSZM (3D)
        _f("glszm_SmallAreaEmphasis", "5QRC", "Small zone emphasis", "glszm"),
        _f("glszm_LargeAreaEmphasis", "48P8", "Large zone emphasis", "glszm"),
        _f("glszm_LowGrayLevelZoneEmphasis", "XMSY", "Low grey level zone emphasis", "glszm"),
        _f("glszm_HighGrayLevelZoneEmphasis", "5GN9", "High grey level zone emphasis", "glszm"),
        _f("glszm_SmallAreaLowGrayLevelEmphasis", "5RAI", "Small zone low grey level emphasis", "glszm"),
        _f("glszm_SmallAreaHighGrayLevelEmphasis", "HW1V", "Small zone high grey level emphasis", "glszm"),
        _f("glszm_LargeAreaLowGrayLevelEmphasis", "YH51", "Large zone low grey level emphasis", "glszm"),
        _f("glszm_LargeAreaHighGrayLevelEmphasis", "J17V", "Large zone high grey level emphasis", "glszm"),
        _f("glszm_GrayLevelNonUniformity", "JNSA", "Grey level non-uniformity", "glszm"),
        _f("glszm_GrayLevelNonUniformityNormalized", "Y1RO", "Normalised grey level non-uniformity", "glszm"),
        _f("glszm_SizeZoneNonUniformity", "4JP3", "Zone size non-uniformity", "glszm"),
        _f("glszm_SizeZoneNonUniformityNormalized", "VB3A", "Normalised zone size non-uniformity", "glszm"),
        _f("glszm_ZonePercentage", "P30P", "Zone percentage", "glszm"),
        _f("glszm_GrayLevelVariance", "BYLV", "Grey level variance", "glszm"),
        _f("glszm_ZoneVariance", "3NSA", "Zone size variance", "glszm"),
        _f("glszm_ZoneEntropy", "GU8N", "Zone size entropy", "glszm"),
        # NGLDM = pyradiomics GLDM with alpha 0 (3D)
        _f("gldm_SmallDependenceEmphasis", "SODN", "Low dependence emphasis", "ngldm"),
        _f("gldm_LargeDependenceEmphasis", "IMOQ", "High dependence emphasis", "ngldm"),
        _f("gldm_LowGrayLevelEmphasis", "TL9H", "Low grey level count emphasis", "ngldm"),
        _f("gldm_HighGrayLevelEmphasis", "OAE7", "High grey level count emphasis", "ngldm"),
        _f("gldm_SmallDependenceLowGrayLevelEmphasis", "EQ3F", "Low dependence low grey level emphasis", "ngldm"),
        _f("gldm_SmallDependenceHighGrayLevelEmphasis", "JA6D", "Low dependence high grey level emphasis", "ngldm"),
        _f("gldm_LargeDependenceLowGrayLevelEmphasis", "NBZI", "High dependence low grey level emphasis", "ngldm"),
        _f("gldm_LargeDependenceHighGrayLevelEmphasis", "9QMG", "High dependence high grey level emphasis", "ngldm"),
        _f("gldm_GrayLevelNonUniformity", "FP8K", "Grey level non-uniformity", "ngldm"),
        _f("gldm_GrayLevelNonUniformity", "5SPA", "Normalised grey level non-uniformity", "ngldm", "derived:gldm_glnn"),
        _f("gldm_DependenceNonUniformity", "Z87G", "Dependence count non-uniformity", "ngldm"),
        _f("gldm_DependenceNonUniformityNormalized", "OKJI", "Normalised dependence count non-uniformity", "ngldm"),
        _f("gldm_DependenceEntropy", "6XV8", "Dependence count percentage", "ngldm", "derived:one"),
        _f("gldm_GrayLevelVariance", "1PFV", "Grey level variance", "ngldm"),
        _f("gldm_DependenceVariance", "DNX2", "Dependence count variance", "ngldm"),
        _f("gldm_DependenceEntropy", "FCBV", "Dependence count entropy", "ngldm"),
        # NGTDM (3D)
        _f("ngtdm_Coarseness", "QCDE", "Coarseness", "ngtdm"),
        _f("ngtdm_Contrast", "65HE", "Contrast", "ngtdm"),
        _f("ngtdm_Busyness", "NQ30", "Busyness", "ngtdm"),
        _f("ngtdm_Complexity", "HDEZ", "Complexity", "ngtdm"),
        _f("ngtdm_Strength", "1X9X", "Strength", "ngtdm"),
    ]
)

#: Features reported by IBSI but derived here (not a pyradiomics feature of that name).
DERIVED_CODES = frozenset(c for c, f in IBSI_MAP.items() if f.correction.startswith("derived"))

#: pyradiomics class -> IBSI aggregation of its reference values (3D extraction, 2D with force2D).
AGGREGATION = {
    "glcm": ("3D, averaged", "2.5D, direction-merged"),
    "glrlm": ("3D, averaged", "2.5D, direction-merged"),
    "glszm": ("3D", "2.5D"),
    "gldm": ("3D", "2.5D"),
    "ngtdm": ("3D", "2.5D"),
}


def aggregation_of(feature: IbsiFeature, *, force2d: bool = False) -> str | None:
    """IBSI aggregation label of the reference value that matches a pyradiomics extraction."""
    cls = feature.source.split("_", 1)[0]
    pair = AGGREGATION.get(cls)
    return None if pair is None else pair[int(force2d)]


def ibsi_values(
    raw: Mapping[str, float],
    *,
    n_morph: int,
    n_int: int,
    voxel_array_shift: float = 0.0,
) -> dict[str, float]:
    """IBSI values of every mapped feature present in ``raw`` for one image type.

    Parameters
    ----------
    raw
        pyradiomics values of one image type keyed ``"<class>_<Feature>"`` (e.g. ``"glcm_Idm"``).
    n_morph
        Voxels in the morphological mask (used by the axis-length correction).
    n_int
        Voxels in the intensity (re-segmented) mask (energy, NGLDM normalisation).
    voxel_array_shift
        pyradiomics ``voxelArrayShift`` used for Energy / RootMeanSquared.

    Returns
    -------
    dict
        IBSI code -> IBSI-compliant value (codes whose source feature is absent are skipped).
    """
    out: dict[str, float] = {}
    for code, feat in IBSI_MAP.items():
        if feat.source not in raw:
            continue
        value = float(raw[feat.source])
        rule = feat.correction
        if rule == "excess":
            value -= 3.0
        elif rule == "axis":
            value = value * math.sqrt(n_morph / (n_morph - 1)) if n_morph > 1 else math.nan
        elif rule == "shift":
            energy = _ibsi_energy(raw, n_int, voxel_array_shift)
            value = energy if code == "N8CA" else math.sqrt(energy / n_int)
        elif rule.startswith("derived:"):
            value = _derived(rule.split(":", 1)[1], value, raw, n_int)
        out[code] = value
    return out


def _ibsi_energy(raw: Mapping[str, float], n_int: int, shift: float) -> float:
    """Energy of the unshifted intensities from pyradiomics' shifted energy."""
    energy = float(raw.get("firstorder_Energy", math.nan))
    if shift == 0.0:
        return energy
    mean = float(raw.get("firstorder_Mean", math.nan))
    return energy - 2.0 * shift * n_int * mean - n_int * shift**2


def _derived(rule: str, value: float, raw: Mapping[str, float], n_int: int) -> float:
    if rule == "compactness1":
        return value**1.5 / (6.0 * math.pi)
    if rule == "compactness2":
        return value**3
    if rule == "disproportion":
        return 1.0 / value if value else math.nan
    if rule == "asphericity":
        return 1.0 / value - 1.0 if value else math.nan
    if rule == "cov":
        mean = float(raw.get("firstorder_Mean", math.nan))
        return math.sqrt(value) / mean if mean else math.nan
    if rule in ("dissimilarity", "sum_variance"):
        return value
    if rule == "gldm_glnn":
        return value / n_int
    if rule == "one":
        return 1.0
    raise ValueError(f"unknown IBSI derivation {rule!r}")


# --- reference values ----------------------------------------------------------------------------


def load_reference(path: str | Path, data_set: str) -> pd.DataFrame:
    """Rows of the IBSI-1 reference table (``ibsi1_reference_values.csv``) for one data set.

    Returns columns ``family, feature, ibsi_code, aggregation, value, tolerance, has_tolerance``;
    ``has_tolerance`` is False where the table gives none ("—").
    """
    table = pd.read_csv(path)
    if "data_set" not in table.columns:
        raise DataError("not an IBSI reference table (no data_set column)", path=path)
    rows = table[table["data_set"] == data_set].copy()
    if rows.empty:
        raise DataError(f"no reference rows for data set {data_set!r}", path=path)
    rows["has_tolerance"] = rows["tolerance_raw"].astype(str).str.strip() != "—"
    rows["aggregation"] = rows["aggregation"].fillna("")
    return rows[["family", "feature", "ibsi_code", "aggregation", "value", "tolerance", "has_tolerance"]]


def within_tolerance(value: float, reference: float, tolerance: float | None) -> bool:
    """Whether ``value`` matches an IBSI reference value.

    With a tolerance: ``|value - reference| <= tolerance``. Without one (or a zero tolerance), the
    reference is a value rounded to 3 significant figures, so ``value`` matches when it rounds to
    it (within half a unit of the third significant figure; a zero reference needs ``|value| < 5e-4``).
    """
    if not math.isfinite(value):
        return False
    if tolerance is not None and tolerance > 0 and abs(value - reference) <= tolerance * (1 + 1e-9):
        return True
    if reference == 0:
        return abs(value) < 5e-4
    half_unit = 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)
    return abs(value - reference) <= half_unit * (1 + 1e-9)


def compare_to_reference(
    values: Mapping[str, float], reference: pd.DataFrame, *, force2d: bool = False
) -> pd.DataFrame:
    """Compare IBSI values (code -> value) with the reference rows of one data set.

    Every mapped code with a reference value at the matching aggregation gives one row with columns
    ``ibsi_code, name, family, aggregation, value, reference, tolerance, ok``.
    """
    records = []
    for code, value in values.items():
        feat = IBSI_MAP[code]
        agg = aggregation_of(feat, force2d=force2d) or ""
        ref = reference[(reference["ibsi_code"] == code) & (reference["aggregation"] == agg)]
        if code == "BC2M" or ref.empty:
            continue
        row = ref.iloc[0]
        tol = float(row["tolerance"]) if bool(row["has_tolerance"]) else None
        records.append(
            {
                "ibsi_code": code,
                "name": feat.name,
                "family": feat.family,
                "aggregation": agg,
                "value": value,
                "reference": float(row["value"]),
                "tolerance": tol,
                "ok": within_tolerance(value, float(row["value"]), tol),
            }
        )
    return pd.DataFrame.from_records(records)


def uncorrected_values(raw: Mapping[str, float]) -> dict[str, float]:
    """IBSI code -> raw pyradiomics value without any correction or derivation.

    What a user of plain pyradiomics would report under the IBSI name; used to show which
    corrections matter (``raw`` keyed ``"<class>_<Feature>"`` as in :func:`ibsi_values`).
    """
    return {
        code: float(raw[f.source])
        for code, f in IBSI_MAP.items()
        if not f.correction.startswith("derived") and f.source in raw
    }
