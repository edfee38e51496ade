"""Derived radiomics regions: classes of the mask, and a peritumoral ring of N mm around it, clipped to image or body.

Config ``radiomics.regions`` names each derived region, e.g. ``{ring10: {ring_mm: 10, clip: body}}`` or, with
``label.classes``, ``{core: {classes: [enhancing, necrosis]}}`` (their union) and
``{edema10: {classes: [enhancing, necrosis], ring_mm: 10}}`` (the ring around them). Every mask source (human,
automatic, second reader, perturbed copies) gets its own regions on the radiomics image's grid, and the features of
each region are rows of the feature table with that ``region`` (the structure itself, every class together, is the
region named ``label.name``).

* The ring holds the voxels outside the mask whose centre lies within ``ring_mm`` of the nearest mask voxel centre
  (exact Euclidean distance in millimetres, the voxel spacing included: ``scipy.ndimage.distance_transform_edt``),
  so ring and mask never overlap.
* ``clip: image``: the ring stops at the image border (a ring around a lesion at the edge of the field of view is
  thinner there; the sidecar counts the voxels lost). ``clip: body``: also only voxels of the body: the image above
  its air / tissue threshold (the lowest of two multi-level Otsu thresholds), with the structure itself, holes
  filled slice by slice and in 3D, largest 26-connected component (:func:`body_mask`), so a ring around a limb
  tumour does not reach into the air around the limb.

A ring that ends up empty (a mask filling the body) is an error naming the subject, the mask and the region.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.geometry import Geometry, check_same_grid, geometry_of
from medpipe.core.io import load_nifti, save_like
from medpipe.core.sidecar import write_sidecar
from medpipe.radiomics.extract import EMPTY_ALLOWED_SOURCE

logger = logging.getLogger(__name__)

#: ``radiomics.regions.<name>.clip`` values (the schema's enum).
CLIPS = ("image", "body")


def ring_array(
    mask: npt.NDArray[Any], spacing: Sequence[float], ring_mm: float, within: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.bool_]:
    """Voxels outside ``mask`` within ``ring_mm`` (voxel centre to nearest mask voxel centre), inside ``within``.

    Parameters
    ----------
    mask
        3D array; every non-zero voxel is the structure.
    spacing
        Voxel spacing (mm) of the three array axes.
    ring_mm
        Ring width (mm), > 0.
    within
        Optional boolean array of the same shape the ring is clipped to (the body).
    """
    inside = np.asarray(mask) > 0
    if not inside.any():
        raise ValueError("the mask is empty: no ring around it")
    distance = ndimage.distance_transform_edt(~inside, sampling=[float(s) for s in spacing])
    ring = (distance > 0) & (distance <= ring_mm)
    return ring & within if within is not None else ring


def body_mask(image: npt.NDArray[Any], structure: npt.NDArray[Any] | None = None) -> npt.NDArray[np.bool_]:
    """The body in ``image``: above its air / tissue threshold, with the structure, holes filled, largest component.

    The threshold is the lowest of two multi-level Otsu thresholds (three classes: air, then soft tissue and the
    bright class, fat on T1-weighted MR or bone on CT). A plain two-class Otsu threshold splits MR tissue at
    fat vs muscle and leaves a muscle tumour outside the "body". The structure (``structure > 0``) lies in the
    body by definition and is added before holes are filled (slice by slice along axis 2, then in 3D) and the
    largest 26-connected component is kept.
    """
    data = np.nan_to_num(np.asarray(image, dtype=np.float32))
    if not np.ptp(data) > 0:
        return np.ones(data.shape, dtype=bool)
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(2)
    otsu.Execute(sitk.GetImageFromArray(data))
    above = data > min(otsu.GetThresholds())
    if structure is not None:
        above |= np.asarray(structure) > 0
    for k in range(above.shape[2]):
        above[:, :, k] = ndimage.binary_fill_holes(above[:, :, k])
    above = ndimage.binary_fill_holes(above)
    components = cc3d.connected_components(above.astype(np.uint8), connectivity=26)
    if components.max() == 0:
        return above
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.asarray(components == int(np.argmax(sizes)))


def derive_region(
    mask: str | Path,
    image: str | Path,
    out_mask: str | Path,
    *,
    subject: str,
    source: str,
    region: str,
    definition: Mapping[str, Any],
) -> Path:
    """Write the derived ``region`` of a mask source (0/1 uint8 on the mask's grid) with its sidecar.

    Parameters
    ----------
    mask
        The mask source the region is derived from (NIfTI on the radiomics image's grid).
    image
        The radiomics image (its grid must be the mask's; ``clip: body`` thresholds it).
    out_mask
        Output region mask; the sidecar (definition, voxel counts, volumes, voxels clipped) is written beside it.
    subject, source, region
        Subject ID, mask source and region name (messages, sidecar). An empty automatic mask (a model that found
        nothing) gives an empty region, so that its feature table has no rows like the mask's own; any other
        empty mask is refused.
    definition
        ``radiomics.regions.<region>``: ``ring_mm`` and ``clip`` (schema defaults applied).

    Raises
    ------
    DataError
        Empty source mask or empty region.
    GeometryError
        The image is not on the mask's grid.
    """
    ring_mm = float(definition["ring_mm"]) if definition.get("ring_mm") is not None else None
    clip = str(definition["clip"])
    if clip not in CLIPS:
        raise DataError(f"radiomics.regions.{region}.clip = {clip!r}; expected one of {list(CLIPS)}", subject=subject)
    mask_img, image_img = load_nifti(mask, subject=subject), load_nifti(image, subject=subject)
    reference = geometry_of(mask_img)
    check_same_grid(geometry_of(image_img), reference, what=f"radiomics image vs mask ({region})", subject=subject)
    labels = np.asarray(mask_img.dataobj)
    values = definition.get("values")
    base = np.isin(labels, values) if values else labels > 0
    record = {"region": region, **definition}
    if not base.any():
        what = f"holds none of the classes {definition['classes']} (values {values})" if values else "is empty"
        if source != EMPTY_ALLOWED_SOURCE:
            raise DataError(f"mask {what}: no region {region}", subject=subject, path=mask)
        logger.warning("sub-%s: the %s mask %s; its %s region is empty too", subject, source, what, region)
        empty = np.zeros(labels.shape, dtype=bool)
        return _write(empty, empty, base, reference, out_mask, subject, [mask, image], record)
    if ring_mm is None:  # the classes themselves
        return _write(base, base, base, reference, out_mask, subject, [mask, image], record)
    unclipped = ring_array(base, reference.spacing, ring_mm)
    body = body_mask(np.asarray(image_img.dataobj), labels) if clip == "body" else None
    ring = unclipped & body if body is not None else unclipped
    if not ring.any():
        raise DataError(
            f"region {region} ({ring_mm:g} mm ring, clip {clip}) is empty around this mask", subject=subject, path=mask
        )
    return _write(ring, unclipped, base, reference, out_mask, subject, [mask, image], record)


def _write(
    ring: npt.NDArray[np.bool_],
    unclipped: npt.NDArray[np.bool_],
    base: npt.NDArray[Any],
    reference: Geometry,
    out_mask: str | Path,
    subject: str,
    inputs: Sequence[str | Path],
    definition: Mapping[str, Any],
) -> Path:
    """The region mask and its sidecar (definition, voxel counts and volume)."""
    save_like(ring.astype(np.uint8), reference, out_mask, dtype=np.uint8)
    voxel_mm3 = float(np.prod(reference.spacing))
    counts = {"n_voxels": int(ring.sum()), "n_voxels_unclipped": int(unclipped.sum())}
    counts["n_voxels_outside_body"] = counts["n_voxels_unclipped"] - counts["n_voxels"]
    write_sidecar(
        out_mask,
        stage="radiomics",
        subject=subject,
        inputs=inputs,
        parameters={**definition, "distance": "euclidean, voxel centre to nearest mask voxel centre, mm"},
        geometry=reference,
        packages=["scipy", "SimpleITK", "connected-components-3d"],
        extra={
            **counts,
            "volume_mm3": round(counts["n_voxels"] * voxel_mm3, 3),
            "source_n_voxels": int(np.count_nonzero(base)),
        },
    )
    logger.info(
        "sub-%s %s: %d voxel(s), %.1f mm3 (%d outside the body left out)",
        subject,
        definition["region"],
        counts["n_voxels"],
        counts["n_voxels"] * voxel_mm3,
        counts["n_voxels_outside_body"],
    )
    return Path(out_mask)


def configured_regions(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``radiomics.regions`` of a validated config (name -> definition, config order).

    A region made of classes gets ``values``: their values in the mask (``label.classes``).

    Raises
    ------
    ConfigError
        A derived region named like the structure itself (``label.name``, the ``region`` of its own rows), or one
        naming a class that ``label.classes`` does not declare.
    """
    regions = {str(name): dict(entry) for name, entry in (config["radiomics"].get("regions") or {}).items()}
    structure = str(config["label"]["name"])
    if structure in regions:
        raise ConfigError(
            f"  radiomics.regions: {structure!r} is label.name, the region of the structure's own feature rows; "
            "rename the derived region"
        )
    declared = {str(k): int(v["value"]) for k, v in (config["label"].get("classes") or {}).items()}
    for name, entry in regions.items():
        if "classes" not in entry:
            continue
        unknown = [c for c in entry["classes"] if c not in declared]
        if unknown:
            raise ConfigError(
                f"  radiomics.regions.{name}.classes: {unknown} are not classes of label.classes {sorted(declared)}"
            )
        entry["values"] = sorted(declared[c] for c in entry["classes"])
    return regions
