"""Radiomics feature extraction with pyradiomics, IBSI names and full provenance.

A params YAML (``config/radiomics/*.yaml``) is a pyradiomics parameter file (``imageType``,
``featureClass``, ``setting``) plus an optional ``medpipe`` section with the IBSI image processing of
:class:`medpipe.radiomics.ibsi_preprocess.IbsiSettings` (interpolation on the centred grid, rounding,
partial-volume mask threshold, re-segmentation range / outlier filtering, bin numbering). pyradiomics'
own ``resampledPixelSpacing`` and ``resegmentRange`` are refused: they follow other conventions
(see :mod:`medpipe.radiomics.ibsi_preprocess`), so one extraction cannot mix the two.

The output is a long table, one row per feature, with provenance on every row (subject, mask
source, image (the sequence the features are of), pyradiomics version, settings hash, image and mask
sha256), the raw pyradiomics value (``value``) and, where the feature maps to IBSI-1, its code, name and
IBSI-compliant value (``ibsi_value``, see :mod:`medpipe.radiomics.ibsi`). Rows of kind ``ibsi-derived`` hold
IBSI features that pyradiomics does not report under that name (e.g. GLCM dissimilarity); they have no raw
value. Every row also names the IBSI-2 filter of its image (its IBSI-2 code and settings) and its IBSI-2 compliance
(phases 1 and 2; ``ibsi2_code``, ``ibsi2_filter``, ``ibsi2_compliance``, from the params that ran, see
:mod:`medpipe.radiomics.ibsi2_labels`); filtered images that cannot be made compliant are labelled so, not left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.geometry import check_same_grid
from medpipe.core.io import read_feature_table, read_sitk, sitk_geometry, write_tsv
from medpipe.core.sidecar import sha256_file
from medpipe.radiomics.ibsi import IBSI_MAP, ibsi_values
from medpipe.radiomics.ibsi2_labels import Ibsi2Label, labels
from medpipe.radiomics.ibsi_extractor import BIN_START_KEY, IbsiFeatureExtractor
from medpipe.radiomics.ibsi_preprocess import (
    IbsiSettings,
    describe,
    interpolate,
    resegment,
    target_spacing,
    voxel_count,
)

logger = logging.getLogger(__name__)

#: Column order of the per-subject feature tables.
COLUMNS = [
    "subject",
    "source",
    "region",
    "image",
    "image_type",
    "feature_class",
    "feature",
    "kind",
    "value",
    "ibsi_code",
    "ibsi_name",
    "ibsi_value",
    "ibsi_correction",
    "ibsi2_code",
    "ibsi2_filter",
    "ibsi2_compliance",
    "pyradiomics_version",
    "settings_hash",
    "image_sha256",
    "mask_sha256",
]

_REFUSED_SETTINGS = {
    "resampledPixelSpacing": "use medpipe.spacing_mm (IBSI centred grid) instead",
    "resegmentRange": "use medpipe.resegment_range instead",
}


def pyradiomics_version() -> str:
    """Installed pyradiomics version (distribution ``pyradiomics-bhklab`` or ``pyradiomics``)."""
    for dist in ("pyradiomics-bhklab", "pyradiomics"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import radiomics

    return str(radiomics.__version__)


def load_params(params: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], IbsiSettings]:
    """Split a params YAML (or dict) into the pyradiomics part and the IBSI processing settings.

    Raises :class:`ConfigError` naming the file and key for refused or malformed settings.
    """
    path = None
    if isinstance(params, str | Path):
        path = Path(params)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read radiomics params: {exc}", path=path) from exc
    else:
        data = dict(params)
    if not isinstance(data, dict):
        raise ConfigError("radiomics params must be a mapping", path=path)
    data = dict(data)
    try:
        ibsi = IbsiSettings.from_dict(data.pop("medpipe", None))
    except ConfigError as exc:
        raise ConfigError(str(exc), path=path) from exc
    for key, hint in _REFUSED_SETTINGS.items():
        if (data.get("setting") or {}).get(key) is not None:
            raise ConfigError(f"setting {key} is not allowed: {hint}", path=path)
    return data, ibsi


def settings_hash(params: Mapping[str, Any], ibsi: IbsiSettings) -> str:
    """Short sha256 of the canonical JSON of all extraction settings (first 16 hex digits)."""
    blob = json.dumps({"pyradiomics": params, "medpipe": ibsi.__dict__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compute_features(
    image: sitk.Image,
    mask: sitk.Image,
    params: Mapping[str, Any],
    ibsi: IbsiSettings,
    *,
    subject: str | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Run the IBSI processing and pyradiomics on one image/mask pair (same grid, checked).

    Returns
    -------
    raw
        pyradiomics ``"<imageType>_<class>_<Feature>"`` -> value.
    ibsi
        image type -> {IBSI code -> IBSI-compliant value}.
    """
    check_same_grid(sitk_geometry(image), sitk_geometry(mask), what="mask vs image", subject=subject)
    mask_arr = sitk.GetArrayViewFromImage(mask)
    if not np.isin(mask_arr, (0, 1)).all():
        raise DataError(f"mask values {np.unique(mask_arr)[:6].tolist()} are not 0/1", subject=subject)
    if not mask_arr.any():
        raise DataError("mask is empty: no feature can be computed", subject=subject)
    extractor = IbsiFeatureExtractor(dict(params))
    settings = extractor.settings
    if ibsi.bin_start is not None:
        settings[BIN_START_KEY] = ibsi.bin_start
    img = sitk.Cast(image, sitk.sitkFloat64)
    if settings.get("normalize"):
        from radiomics import imageoperations

        img = imageoperations.normalizeImage(img, **settings)
    img, morph = interpolate(img, mask, ibsi)
    intensity = resegment(img, morph, ibsi, subject=subject)
    n_morph, n_int = voxel_count(morph), voxel_count(intensity)
    logger.info("IBSI processing: %s; ROI %d voxels (intensity mask %d)", describe(ibsi), n_morph, n_int)
    try:
        result = extractor.execute_masks(img, morph, intensity)
    except ValueError as exc:  # pyradiomics reports invalid ROIs as ValueError
        raise RoiRefusedError(f"pyradiomics refused the ROI: {exc}", subject=subject) from exc
    raw = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
    shift = float(settings.get("voxelArrayShift", 0))
    by_type: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        image_type, rest = _split_name(key)
        by_type.setdefault(image_type, {})[rest] = value
    shape = by_type.get("original", {})
    ibsi_by_type = {}
    for image_type, values in by_type.items():
        merged = {**{k: v for k, v in shape.items() if k.startswith("shape_")}, **values}
        codes = ibsi_values(merged, n_morph=n_morph, n_int=n_int, voxel_array_shift=shift)
        if image_type != "original":  # shape is computed once, on the original image
            codes = {c: v for c, v in codes.items() if IBSI_MAP[c].family != "morphology"}
        ibsi_by_type[image_type] = codes
    return raw, ibsi_by_type


def _split_name(key: str) -> tuple[str, str]:
    """``"wavelet-LLH_glcm_Idm" -> ("wavelet-LLH", "glcm_Idm")``."""
    image_type, cls, feature = key.rsplit("_", 2)
    return image_type, f"{cls}_{feature}"


def feature_rows(
    raw: Mapping[str, float],
    ibsi: Mapping[str, Mapping[str, float]],
    *,
    params: Mapping[str, Any],
    spacing_mm: Sequence[float] | None,
) -> list[dict[str, Any]]:
    """Long-format rows (without provenance) from :func:`compute_features` output.

    Parameters
    ----------
    raw, ibsi
        The two outputs of :func:`compute_features`.
    params
        The pyradiomics params it ran with (``imageType``, ``setting``): they give each row's IBSI-2 filter.
    spacing_mm
        Voxel spacing (x, y, z) the filters ran on, i.e. after the IBSI interpolation; None when not known.
    """
    source_to_codes: dict[str, list[str]] = {}
    for code, feat in IBSI_MAP.items():
        if not feat.correction.startswith("derived"):
            source_to_codes.setdefault(feat.source, []).append(code)
    types = {_split_name(key)[0] for key in raw} | set(ibsi)
    filters = labels(types, params, spacing_mm)
    rows: list[dict[str, Any]] = []
    for key, value in raw.items():
        image_type, name = _split_name(key)
        codes = [c for c in source_to_codes.get(name, []) if c in ibsi.get(image_type, {})]
        code = codes[0] if codes else ""
        row = _row(image_type, name, key, "pyradiomics", value, code, ibsi.get(image_type, {}))
        rows.append({**row, **_ibsi2_columns(filters[image_type])})
    for image_type, values in ibsi.items():
        for code in values:
            feat = IBSI_MAP[code]
            if feat.correction.startswith("derived"):
                cls = feat.source.split("_", 1)[0]
                row = _row(
                    image_type,
                    f"{cls}_IBSI{code}",
                    f"{image_type}_{cls}_IBSI{code}",
                    "ibsi-derived",
                    float("nan"),
                    code,
                    values,
                )
                rows.append({**row, **_ibsi2_columns(filters[image_type])})
    return rows


def _ibsi2_columns(label: Ibsi2Label) -> dict[str, str]:
    return {"ibsi2_code": label.code, "ibsi2_filter": label.filter, "ibsi2_compliance": label.compliance}


def _row(
    image_type: str, name: str, key: str, kind: str, value: float, code: str, codes: Mapping[str, float]
) -> dict[str, Any]:
    feat = IBSI_MAP.get(code)
    return {
        "image_type": image_type,
        "feature_class": name.split("_", 1)[0],
        "feature": key,
        "kind": kind,
        "value": value,
        "ibsi_code": code,
        "ibsi_name": feat.name if feat else "",
        "ibsi_value": codes.get(code, float("nan")) if code else float("nan"),
        "ibsi_correction": feat.correction if feat else "",
    }


#: The one mask source whose mask may be empty or too small for pyradiomics (the network's): every other such
#: mask is an error.
EMPTY_ALLOWED_SOURCE = "auto"


class RoiRefusedError(DataError):
    """pyradiomics refused the ROI after the IBSI processing (too small, too few dimensions)."""


def extract_features(
    image: str | Path,
    mask: str | Path,
    out_tsv: str | Path,
    *,
    subject: str,
    source: str,
    image_name: str,
    params_file: str | Path,
    region: str,
) -> Path:
    """Extract pyradiomics features of one image/mask pair into a long TSV with provenance.

    Parameters
    ----------
    image, mask
        Image and mask on the same grid (checked first; :class:`GeometryError` names both files); every non-zero
        voxel is the region (a mask of several ``label.classes``: the whole structure).
    out_tsv
        Output table, one row per feature (columns :data:`COLUMNS`).
    subject
        Subject ID (subject sheet).
    source
        Mask source, e.g. ``human``, ``auto``, a model name or a perturbation. An empty ``auto`` mask, or one
        pyradiomics refuses as too small, gives a table without rows (logged); any other such mask is refused.
    image_name
        The image's name in the table (``image`` column): its sequence, e.g. ``T1w``, ``CT``, ``ADC``.
    params_file
        Radiomics params YAML (pyradiomics params + optional ``medpipe`` IBSI section).
    region
        The ``region`` column: ``label.name`` for the structure's own mask, or the name of a derived region
        (``radiomics.regions``, :mod:`medpipe.radiomics.regions`) whose mask this is.
    """
    params, ibsi = load_params(params_file)
    img = read_sitk(image, subject=subject)
    msk = read_sitk(mask, subject=subject)
    check_same_grid(
        sitk_geometry(img),
        sitk_geometry(msk),
        what=f"mask {Path(mask).name} vs image {Path(image).name}",
        subject=subject,
        path=mask,
    )
    if source == EMPTY_ALLOWED_SOURCE and not sitk.GetArrayViewFromImage(msk).any():
        # A model that found nothing (e.g. on a shifted external scan): a table without rows, so the run goes on;
        # downstream, the subject has no features of this source (reproducibility and outcome models say so).
        logger.warning(
            "subject %s: the automatic mask is empty; no %s features of %s (table without rows)",
            subject,
            source,
            image_name,
        )
        return write_tsv(pd.DataFrame(columns=COLUMNS), out_tsv)
    structure = sitk.Cast(msk > 0, sitk.sitkUInt8)  # a mask of several classes: the whole structure
    try:
        raw, codes = compute_features(img, structure, params, ibsi, subject=subject)
    except RoiRefusedError as exc:
        if source != EMPTY_ALLOWED_SOURCE:
            raise
        # A model that found only a speck (a class of a few voxels): treated like an empty automatic mask.
        logger.warning("subject %s: %s; no %s features of %s (table without rows)", subject, exc, source, image_name)
        return write_tsv(pd.DataFrame(columns=COLUMNS), out_tsv)
    rows = feature_rows(raw, codes, params=params, spacing_mm=target_spacing(img, ibsi))
    provenance = {
        "subject": subject,
        "source": source,
        "region": region,
        "image": image_name,
        "pyradiomics_version": pyradiomics_version(),
        "settings_hash": settings_hash(params, ibsi),
        "image_sha256": sha256_file(image),
        "mask_sha256": sha256_file(mask),
    }
    table = pd.DataFrame([{**provenance, **row} for row in rows], columns=COLUMNS)
    logger.info(
        "subject %s, mask %s, image %s: %d features (%d with an IBSI code)",
        subject,
        source,
        image_name,
        len(table),
        int((table["ibsi_code"] != "").sum()),
    )
    return write_tsv(table, out_tsv)


def collect(
    tables: Iterable[str | Path],
    out: str | Path,
    out_plot: str | Path | None = None,
    *,
    structure: str | None = None,
) -> Path:
    """Concatenate per-subject/source feature tables into one long TSV, sorted deterministically.

    Raises :class:`DataError` when a table lacks the expected columns, when tables were made with different
    pyradiomics versions, or when the tables of one image were made with different settings (settings hash;
    each image has its own params file, ``radiomics.images``). With ``out_plot``, also draws
    the report's overview of key features per subject and mask source (of the ``structure`` region, the
    structure's own rows, when given).
    """
    frames = []
    for path in sorted(str(p) for p in tables):
        frame = read_feature_table(path)
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(
                f"feature table lacks columns {missing}: written by an older medpipe? Re-make it with "
                "`snakemake --forcerun radiomics`",
                path=path,
            )
        frames.append(frame)
    if not frames:
        raise DataError("no feature tables to collect", path=out)
    table = pd.concat(frames, ignore_index=True)
    versions = sorted(table["pyradiomics_version"].astype(str).unique())
    if len(versions) > 1:
        raise DataError(f"feature tables mix pyradiomics_version values {versions}; re-run radiomics", path=out)
    for image, part in table.groupby("image", sort=True):
        hashes = sorted(part["settings_hash"].astype(str).unique())
        if len(hashes) > 1:
            raise DataError(
                f"the feature tables of image {image} mix settings_hash values {hashes}; re-run radiomics", path=out
            )
    table = table.sort_values(["subject", "image", "source", "region", "feature"], kind="stable")[COLUMNS]
    if out_plot is not None:
        from medpipe.radiomics.figures import save_feature_overview

        save_feature_overview(table if structure is None else table[table["region"] == structure], out_plot)
    return write_tsv(table, out)
