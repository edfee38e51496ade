"""Postprocessing of predicted label maps and their return to the native image grid.

The prediction (on the training grid: resampled, possibly cropped or reoriented) is first
resampled in world coordinates onto the native grid of the converted reference image with
:func:`medpipe.core.resample.resample_to_grid` (label-aware by default: each class interpolated linearly
as a one-hot channel, then the class of largest weight; ``nearest`` also allowed), which undoes resampling,
cropping and reorientation at once. Cleaning then happens on the native grid, so component
volumes are measured on the grid the clinician sees. Per class, in this order:

1. morphological opening, then closing, with an ellipsoidal structuring element of the given
   radius in mm (anisotropic spacing respected; 0 disables);
2. removal of components smaller than ``min_size_mm3`` (``cc3d.dust``);
3. keep the largest connected component (``cc3d.largest_k``) when ``largest_component`` is true,
   or, when it is ``"auto"``, when the recorded decision for that class says so;
4. filling of enclosed holes (``fill_voids``).

Voxels added by closing or hole filling are taken only from the background, never from another
class (a necrotic core inside an enhancing rim keeps its label). Connectivity (6, 18 or 26) is
configurable. :func:`decide_largest_component` makes the nnU-Net-style decision from validation
pairs: keep only the largest component for a class when it raises the mean Dice over cases.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from medpipe.core.config import section_schema, with_defaults
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.geometry import check_same_grid, geometry_of
from medpipe.core.io import load_nifti, save_like
from medpipe.core.overlap import dice_score
from medpipe.core.sidecar import write_json, write_sidecar

logger = logging.getLogger(__name__)

_PACKAGES = ("connected-components-3d", "fill_voids", "scipy")
_Connectivity = Literal[6, 18, 26]


def _class_keys() -> set[str]:
    """Keys of ``config["postprocess"]`` that ``per_class`` may override (the schema's, less the run-wide ones)."""
    return set(section_schema("postprocess")["properties"]) - {"per_class", "dicom_seg"}


def class_settings(settings: Mapping[str, Any], value: int) -> dict[str, Any]:
    """Settings of one class: schema defaults, then ``settings``, then ``settings["per_class"][value]``.

    Raises
    ------
    ConfigError
        An override key is unknown, or a value is not allowed by the schema.
    """
    per_class = settings.get("per_class") or {}
    override = per_class.get(value, per_class.get(str(value), {}))
    unknown = set(override) - _class_keys()
    if unknown:
        raise ConfigError(f"postprocess.per_class.{value}: unknown keys {sorted(unknown)}")
    merged = {k: v for k, v in settings.items() if k != "per_class"}
    merged.update(override)
    return with_defaults(merged, "postprocess")


def ball(radius_mm: float, spacing: Sequence[float]) -> npt.NDArray[np.bool_]:
    """Ellipsoidal structuring element of radius ``radius_mm`` on a grid of ``spacing`` (mm)."""
    half = [math.floor(radius_mm / float(s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * float(s) for h, s in zip(half, spacing, strict=True)], indexing="ij")
    return np.asarray(sum(g**2 for g in grids) <= radius_mm**2 + 1e-9)


def clean_binary(
    mask: npt.NDArray[np.bool_],
    spacing: Sequence[float],
    settings: Mapping[str, Any],
    *,
    largest_component: bool,
) -> npt.NDArray[np.bool_]:
    """Apply opening, closing, small-component removal, largest component and hole filling."""
    import cc3d
    import fill_voids
    from scipy import ndimage

    out = np.asarray(mask, dtype=bool)
    conn = cast(_Connectivity, int(settings["connectivity"]))
    for op, key in ((ndimage.binary_opening, "opening_mm"), (ndimage.binary_closing, "closing_mm")):
        radius = float(settings[key])
        if radius > 0 and out.any():
            struct = ball(radius, spacing)
            pad = [(s // 2, s // 2) for s in struct.shape]  # closing must not be clipped at the border
            out = op(np.pad(out, pad), structure=struct)[tuple(slice(p, -p or None) for p, _ in pad)]
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    min_size = float(settings["min_size_mm3"])
    if min_size > 0 and out.any():
        out = cc3d.dust(out, threshold=math.ceil(min_size / voxel_mm3), connectivity=conn, in_place=False)
    if largest_component and out.any():
        out = cc3d.largest_k(out, k=1, connectivity=conn) > 0
    if settings["fill_holes"] and out.any():
        out = fill_voids.fill(out, in_place=False)
    return np.asarray(out, dtype=bool)


def clean_labels(
    labels: npt.NDArray[Any],
    spacing: Sequence[float],
    settings: Mapping[str, Any],
    *,
    decision: Mapping[str, Any] | None = None,
) -> tuple[npt.NDArray[np.uint8], dict[str, dict[str, int]]]:
    """Clean every class of a label map; return the new map and per-class voxel counts before/after."""
    src = np.asarray(labels)
    if src.size and (src.min() < 0 or src.max() > 255 or not np.all(np.mod(src, 1) == 0)):
        raise DataError(f"label map must hold integer labels 0..255, found range {src.min()}..{src.max()}")
    src = src.astype(np.uint8)
    out = src.copy()
    report: dict[str, dict[str, int]] = {}
    for value in (int(v) for v in np.unique(src) if v != 0):
        cfg = class_settings(settings, value)
        largest = _largest_component_flag(cfg["largest_component"], value, decision)
        kept = clean_binary(src == value, spacing, cfg, largest_component=largest)
        out[(out == value) & ~kept] = 0
        out[kept & (src == 0) & (out == 0)] = value
        report[str(value)] = {
            "voxels_before": int((src == value).sum()),
            "voxels_after": int((out == value).sum()),
            "largest_component": int(largest),
        }
    return out, report


def _largest_component_flag(setting: Any, value: int, decision: Mapping[str, Any] | None) -> bool:
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ConfigError(f"postprocess.largest_component must be true, false or 'auto', got {setting!r}")
    if decision is None:
        raise ConfigError("postprocess.largest_component is 'auto' but no decision file was given")
    entry = decision.get("classes", {}).get(str(value))
    if entry is None:  # a class never seen in validation: keep what the network predicted
        logger.warning("no largest-component decision for label %d; components kept", value)
        return False
    return bool(entry["apply_largest_component"])


def postprocess_to_native(
    pred: str | Path,
    reference: str | Path,
    out_mask: str | Path,
    out_qc: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any],
    human_mask: str | Path | None = None,
    decision: str | Path | None = None,
) -> Path:
    """Bring a predicted label map onto the native reference grid, clean it and draw its QC overlay.

    Parameters
    ----------
    pred
        Predicted label map on the training grid (NIfTI, integer labels).
    reference
        Converted reference image: the native grid of the output (shape and affine copied exactly).
    out_mask
        Destination label map (uint8) with sidecar ``.json``.
    out_qc
        Overlay of the automatic (and human, when given) mask on the reference image.
    subject
        Subject ID.
    settings
        ``config["postprocess"]``; missing keys take the schema defaults (:func:`medpipe.core.config.with_defaults`).
    human_mask
        Human mask on the native grid, drawn in the QC overlay when given.
    decision
        JSON written by :func:`decide_largest_component` (needed when ``largest_component`` is
        ``"auto"``).
    """
    from medpipe.core.qc import save_overlay
    from medpipe.core.resample import resample_to_grid

    pred_img = load_nifti(pred, subject=subject)
    ref_img = load_nifti(reference, subject=subject)
    native = geometry_of(ref_img)
    cfg = with_defaults(settings, "postprocess")
    if np.asarray(pred_img.dataobj).ndim != 3:
        raise DataError(f"prediction must be a 3D label map, got shape {pred_img.shape}", subject=subject, path=pred)
    resampled = resample_to_grid(pred_img, native, interpolation=str(cfg["interpolation"]))
    dec = json.loads(Path(decision).read_text()) if decision is not None else None
    data = np.rint(np.asarray(resampled, dtype=np.float64))
    cleaned, counts = clean_labels(data, native.spacing, cfg, decision=dec)
    save_like(cleaned, native, out_mask, dtype=np.uint8)
    written = geometry_of(load_nifti(out_mask, subject=subject))
    check_same_grid(written, native, what="written mask vs reference", subject=subject, path=out_mask, atol_mm=0.0)
    inputs = [pred, reference, *([decision] if decision is not None else [])]
    write_sidecar(
        out_mask,
        stage="postprocess",
        subject=subject,
        inputs=inputs,
        parameters={k: cfg[k] for k in sorted(cfg)},
        geometry=native,
        packages=_PACKAGES,
        extra={"classes": counts},
    )
    masks = {"auto": cleaned}
    if human_mask is not None:
        human_img = load_nifti(human_mask, subject=subject)
        check_same_grid(
            geometry_of(human_img), native, what="human mask vs reference", subject=subject, path=human_mask
        )
        masks["human"] = np.asarray(human_img.dataobj)
    save_overlay(
        np.asarray(ref_img.dataobj, dtype=np.float32),
        masks,
        out_qc,
        title=f"sub-{subject}: automatic mask (postprocessed, native grid)",
        spacing=native.spacing,
    )
    logger.info("subject %s: postprocessed %s -> %s (%s)", subject, Path(pred).name, Path(out_mask).name, counts)
    return Path(out_mask)


def decide_largest_component(
    pairs: Sequence[tuple[str | Path, str | Path]],
    out_json: str | Path,
    *,
    labels: Mapping[str, int],
    connectivity: int | None = None,
) -> dict[str, Any]:
    """Decide per class whether keeping the largest component helps, from validation pairs.

    For each class the mean Dice over cases is computed for the raw prediction and for the
    prediction reduced to its largest connected component; the step is applied for that class
    only when it strictly raises the mean Dice (nnU-Net's rule). Empty masks follow
    :func:`medpipe.core.overlap.dice_score`.

    Parameters
    ----------
    pairs
        ``(prediction, ground truth)`` label maps, each pair on one grid (checked).
    out_json
        Destination of the decision (read by :func:`postprocess_to_native`).
    labels
        Class name -> label value.
    connectivity
        Connectivity for the component analysis (6, 18 or 26); ``None``: the schema default of
        ``postprocess.connectivity``.
    """
    import cc3d

    given = {} if connectivity is None else {"connectivity": connectivity}
    conn = cast(_Connectivity, int(with_defaults(given, "postprocess")["connectivity"]))

    if not pairs:
        raise DataError("no (prediction, ground truth) pairs to decide postprocessing from", path=out_json)
    before: dict[int, list[float]] = {v: [] for v in labels.values()}
    after: dict[int, list[float]] = {v: [] for v in labels.values()}
    for pred, gt in pairs:
        p_img, g_img = load_nifti(pred), load_nifti(gt)
        check_same_grid(geometry_of(p_img), geometry_of(g_img), what="prediction vs ground truth", path=pred)
        p, g = np.rint(np.asarray(p_img.dataobj)), np.rint(np.asarray(g_img.dataobj))
        for value in labels.values():
            pm, gm = p == value, g == value
            before[value].append(dice_score(pm, gm))
            lcc = cc3d.largest_k(pm, k=1, connectivity=conn) > 0 if pm.any() else pm
            after[value].append(dice_score(lcc, gm))
    classes = {}
    for name, value in labels.items():
        mb, ma = float(np.mean(before[value])), float(np.mean(after[value]))
        classes[str(value)] = {
            "name": name,
            "n_cases": len(before[value]),
            "mean_dice_before": round(mb, 6),
            "mean_dice_after": round(ma, 6),
            "apply_largest_component": bool(ma > mb),
        }
        logger.info(
            "label %s: mean Dice %.4f -> %.4f with largest component: %s",
            name,
            mb,
            ma,
            "apply" if ma > mb else "do not apply",
        )
    decision = {
        "rule": "apply when mean Dice over cases strictly increases",
        "connectivity": conn,
        "cases": [Path(p).name for p, _ in pairs],
        "classes": classes,
    }
    write_json(decision, out_json)
    return decision
