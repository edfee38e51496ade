"""Label classes: several structures per subject, declared once in ``label.classes``.

``label.classes: {enhancing: {value: 1, rtstruct_roi: "^GTV_enh"}, necrosis: {value: 2, rtstruct_roi: "^Necro"}}``
declares, per class, its value in the converted mask (and in a NIfTI label), the RTSTRUCT ROI-name pattern and the
DICOM-SEG segment-label pattern (``segment``; the ROI pattern when not given) that find it. Values are 1..K, so the
converted mask holds class indices as the network trains on them (``segmentation.num_classes`` = K + 1).

Overlapping ROIs (an RTSTRUCT draws every structure as its own closed contour, so a core drawn inside a rim overlaps
it) are resolved by ``label.priority`` (class names, highest first; default the order of ``label.classes``): a voxel
goes to the first class that claims it, and the voxels each class lost to another are counted in the label's sidecar
(``overlaps``: ``"<winner> over <loser>"``).

Without ``label.classes`` the label is one structure (``label.name``, value 1, ``label.rtstruct_roi``), as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.core.errors import ConfigError, DataError, DicomError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelClass:
    """One declared class: its name, its value in the mask, and the patterns that find it in DICOM labels."""

    name: str
    value: int
    rtstruct_roi: str
    segment: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "rtstruct_roi": self.rtstruct_roi, "segment": self.segment}


def label_classes(label: Mapping[str, Any]) -> list[LabelClass]:
    """The classes of the ``label`` config section (schema defaults applied), in priority order.

    Raises
    ------
    ConfigError
        Values that are not 1..K, or a ``priority`` that is not an ordering of the declared classes.
    """
    declared = label.get("classes") or {}
    if not declared:
        return [LabelClass(str(label["name"]), 1, str(label["rtstruct_roi"]), str(label["rtstruct_roi"]))]
    values = sorted(int(entry["value"]) for entry in declared.values())
    if values != list(range(1, len(declared) + 1)):
        raise ConfigError(
            f"  label.classes: values {values} must be 1..{len(declared)}, each once (the mask holds class indices)"
        )
    priority = list(label.get("priority") or declared)
    if sorted(priority) != sorted(declared):
        raise ConfigError(
            f"  label.priority: {priority} must list every class of label.classes {sorted(declared)} exactly once"
        )
    out = []
    for name in priority:
        entry = declared[name]
        roi = str(entry.get("rtstruct_roi") or f"^{name}$")
        out.append(LabelClass(str(name), int(entry["value"]), roi, str(entry.get("segment") or roi)))
    return out


def classes_from_records(records: Sequence[Mapping[str, Any]] | None) -> list[LabelClass] | None:
    """:class:`LabelClass` objects from their ``to_dict`` records (a rule's params); None stays None."""
    if records is None:
        return None
    return [LabelClass(str(r["name"]), int(r["value"]), str(r["rtstruct_roi"]), str(r["segment"])) for r in records]


def combine(
    masks: Mapping[str, npt.NDArray[Any]], classes: Sequence[LabelClass]
) -> tuple[npt.NDArray[np.uint8], dict[str, int]]:
    """One class-index mask from per-class binary masks, the first class in ``classes`` winning overlaps.

    Returns
    -------
    mask, overlaps
        uint8 mask (0 background, class values) and, per pair ``"<winner> over <loser>"``, the voxels the later
        class lost (only pairs that overlap).
    """
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint8)
    owner = np.zeros(shape, dtype=np.int16)  # index + 1 into classes of the class holding each voxel
    overlaps: dict[str, int] = {}
    for index, cls in enumerate(classes):
        region = np.asarray(masks[cls.name]) > 0
        for earlier in range(index):
            lost = int(np.count_nonzero(region & (owner == earlier + 1)))
            if lost:
                overlaps[f"{classes[earlier].name} over {cls.name}"] = lost
        free = region & (owner == 0)
        out[free] = cls.value
        owner[free] = index + 1
    return out, overlaps


def dicom_class_masks(
    classes: Sequence[LabelClass],
    read_one: Callable[[str], tuple[npt.NDArray[np.uint8], dict[str, Any]]],
    *,
    subject: str,
    path: Any,
    kind: str,
) -> tuple[dict[str, npt.NDArray[np.uint8]], dict[str, Any]]:
    """Each class's binary mask from an RTSTRUCT (``kind`` rtstruct: its ROI pattern) or a SEG (its segment pattern).

    ``read_one`` selects and rasterises the one ROI or segment a pattern matches. A pattern that matches none or
    several stops the import with the class named.
    """
    key = "rtstruct_roi" if kind == "rtstruct" else "segment"
    masks: dict[str, npt.NDArray[np.uint8]] = {}
    found: dict[str, Any] = {}
    for cls in classes:
        pattern = str(getattr(cls, key))
        try:
            masks[cls.name], found[cls.name] = read_one(pattern)
        except DicomError as exc:
            raise DicomError(
                f"class {cls.name!r} (label.classes.{cls.name}.{key} = {pattern!r}): {exc.message}",
                subject=subject,
                path=path,
            ) from exc
    return masks, found


def nifti_class_values(raw: npt.NDArray[Any], classes: Sequence[LabelClass], *, subject: str, path: Any) -> None:
    """Refuse a NIfTI label holding values other than 0 and the declared class values (naming the classes)."""
    allowed = {0, *(c.value for c in classes)}
    values = np.unique(raw)
    bad = [float(v) for v in values if float(v) not in allowed]
    if bad:
        declared = {c.name: c.value for c in classes}
        shown = [int(v) if v.is_integer() else float(f"{v:.6g}") for v in bad[:10]]
        raise DataError(
            f"label holds value(s) {shown} outside the declared classes {declared} (label.classes; 0 is background)",
            subject=subject,
            path=path,
        )
    for cls in classes:
        if cls.value not in values:
            logger.warning(
                "sub-%s: class %s (value %d) is absent from the label %s", subject, cls.name, cls.value, path
            )


def class_record(
    mask: npt.NDArray[Any], classes: Sequence[LabelClass], voxel_mm3: float, found: Mapping[str, Any]
) -> dict[str, Any]:
    """The sidecar's ``classes`` record: per class its value, voxels, volume and what found it."""
    record = {}
    for cls in classes:
        n = int(np.count_nonzero(np.asarray(mask) == cls.value))
        record[cls.name] = {
            "value": cls.value,
            "n_voxels": n,
            "volume_mm3": round(n * voxel_mm3, 3),
            **found.get(cls.name, {}),
        }
        if n == 0:
            logger.warning("class %s has no voxel in the converted label", cls.name)
    return record


def check_label_classes(config: Mapping[str, Any]) -> list[LabelClass]:
    """Start-of-run check of ``label.classes`` against the rest of the config; returns the classes
    (:func:`label_classes`: the one structure ``label.name`` when none are declared).

    Raises
    ------
    ConfigError
        Bad values or priority (:func:`label_classes`); ``label.threshold`` with classes (it binarises one
        structure); a typed ``segmentation.num_classes`` other than K + 1 for a run that trains.
    """
    classes = label_classes(config["label"])
    if not config["label"].get("classes"):
        return classes
    if config["label"].get("threshold") is not None:
        raise ConfigError(
            "  label.threshold binarises a one-structure probability label; with label.classes the NIfTI label "
            "must hold the class values (remove label.threshold)"
        )
    segmentation = config.get("segmentation", {})
    planned = segmentation.get("plan") == "auto"
    wanted = len(classes) + 1
    if config.get("automatic_segmentation", True) and not planned and segmentation.get("num_classes") != wanted:
        raise ConfigError(
            f"  segmentation.num_classes: {segmentation.get('num_classes')} but label.classes declares "
            f"{len(classes)} class(es) {[c.name for c in classes]}: set num_classes: {wanted} (background included)"
        )
    return classes


def whole_label(config: Mapping[str, Any], classes: Sequence[LabelClass]) -> str:
    """Name of the evaluation row of the whole structure: ``label.name`` (the union of the classes) with two or
    more classes, else the one class."""
    return str(config["label"]["name"]) if len(classes) > 1 else classes[0].name


def evaluation_labels(config: Mapping[str, Any], classes: Sequence[LabelClass]) -> dict[str, list[int]]:
    """Name -> mask values of every evaluation row: each class, the whole structure and ``evaluate.regions``.

    The classes come first in value order, then (two or more classes) ``label.name`` as the union of every class
    (BraTS' whole tumour), then each configured region as the union of its classes.

    Raises
    ------
    ConfigError
        A region naming a class that is not declared, a region named like a class or ``label.name``, regions
        without ``label.classes``, or a class named ``label.name`` beside other classes.
    """
    values = {c.name: c.value for c in sorted(classes, key=lambda c: c.value)}
    labels = {name: [value] for name, value in values.items()}
    whole = whole_label(config, classes)
    if len(values) > 1:
        if whole in values:
            raise ConfigError(
                f"  label.classes: class {whole!r} is named like label.name, which names the whole structure (the "
                "union of every class) in the evaluation tables: rename the class or label.name"
            )
        labels[whole] = sorted(values.values())
    regions = (config.get("evaluate") or {}).get("regions") or {}
    if regions and not config["label"].get("classes"):
        raise ConfigError("  evaluate.regions: unions of label.classes, but label.classes declares none")
    for name, members in regions.items():
        if name in labels:
            raise ConfigError(f"  evaluate.regions.{name}: named like a class or label.name; choose another name")
        unknown = [m for m in members if m not in values]
        if unknown:
            raise ConfigError(
                f"  evaluate.regions.{name}: {unknown} not in label.classes {sorted(values)}: a region is a union of "
                "declared classes"
            )
        labels[name] = sorted(values[m] for m in members)
    return labels
