"""Training data: validated, cached cases and on-the-fly patch sampling with augmentation (MONAI).

Cases are read once, checked (channels on one grid, finite voxels, label values, non-empty label)
and held in memory by :class:`monai.data.CacheDataset`; every draw then crops a patch with
:class:`~monai.transforms.RandCropByPosNegLabeld` (``foreground_ratio`` of the patches centred on
the label; with several classes that share split evenly over the classes, :func:`_patch_sampler`)
and augments it. Cases smaller than the patch are zero-padded to the patch size (documented
handling, logged), never an error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from monai import transforms as mt
from monai.data import CacheDataset

from medpipe.core.errors import DataError
from medpipe.core.geometry import Geometry, check_finite, check_same_grid, geometry_of
from medpipe.core.io import load_nifti
from medpipe.segment.losses import signed_distance_map
from medpipe.segment.model import slice_axis

logger = logging.getLogger(__name__)


@dataclass
class Case:
    """One subject in memory: ``image`` ``(C, X, Y, Z)`` float32, ``label`` ``(1, X, Y, Z)`` uint8."""

    subject: str
    image: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint8] | None
    geometry: Geometry


def load_image_stack(paths: Sequence[str], *, subject: str) -> tuple[npt.NDArray[np.float32], Geometry]:
    """Read the channels of one subject, checking they are 3D, finite and on one grid."""
    if not paths:
        raise DataError("no input images given", subject=subject)
    arrays: list[npt.NDArray[np.float32]] = []
    ref: Geometry | None = None
    for path in paths:
        img = load_nifti(path, subject=subject)
        if len(img.shape) != 3:
            raise DataError(f"expected a 3D image per channel, got shape {img.shape}", subject=subject, path=path)
        geom = geometry_of(img)
        if ref is None:
            ref = geom
        else:
            check_same_grid(ref, geom, what=f"channel {path} vs channel {paths[0]}", subject=subject, path=path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        check_finite(data, subject=subject, path=path)
        arrays.append(data)
    if ref is None:  # unreachable: paths is non-empty
        raise DataError("no input images given", subject=subject)
    return np.stack(arrays), ref


def load_case(images: Sequence[str], label: str | None, *, subject: str, n_classes: int) -> Case:
    """Read one training case; its label must lie on the image grid, hold classes < ``n_classes``."""
    image, geom = load_image_stack(images, subject=subject)
    lab = None
    if label is not None:
        limg = load_nifti(label, subject=subject)
        check_same_grid(geom, geometry_of(limg), what="label vs image", subject=subject, path=label)
        raw = np.asarray(limg.dataobj)
        check_finite(raw, subject=subject, path=label)
        values = np.unique(raw)
        bad = [float(v) for v in values if v < 0 or v >= n_classes or v != np.round(v)]
        if bad:
            raise DataError(
                f"label values {bad[:5]} are not class indices 0..{n_classes - 1} (segmentation.num_classes)",
                subject=subject,
                path=label,
            )
        if not np.any(raw):
            raise DataError(
                "label is empty (no foreground voxel); a training case needs a segmented "
                "structure: fix the label or remove the subject from training",
                subject=subject,
                path=label,
            )
        lab = raw.astype(np.uint8)[None]
    return Case(subject, image, lab, geom)


def load_cases(
    images: Sequence[Sequence[str]], labels: Sequence[str], subjects: Sequence[str], n_classes: int
) -> list[Case]:
    """Load every training case; all must have the same number of channels."""
    if not (len(images) == len(labels) == len(subjects)):
        raise DataError(f"{len(subjects)} subjects but {len(images)} image lists and {len(labels)} labels")
    cases: list[Case] = []
    for subject, imgs, lab in zip(subjects, images, labels, strict=True):
        if cases and len(imgs) != cases[0].image.shape[0]:
            raise DataError(
                f"{len(imgs)} input channels, but subject {cases[0].subject} has "
                f"{cases[0].image.shape[0]}: every subject needs the same sequences",
                subject=subject,
                path=imgs[0] if imgs else None,
            )
        cases.append(load_case(imgs, lab, subject=subject, n_classes=n_classes))
    return cases


def _per_axis(value: float, slice_wise: bool, slice_axis: int, *, on_slice_axis: bool) -> tuple[float, ...]:
    """``value`` on every axis (3D); slice-wise: on the slice axis only (rotation about it, in the slice plane),
    or on the two in-plane axes only (scaling)."""
    if not slice_wise:
        return (value, value, value)
    return tuple(value if (a == slice_axis) == on_slice_axis else 0.0 for a in range(3))


def augmentations(
    aug: Mapping[str, Any],
    keys: Sequence[str],
    *,
    slice_wise: bool,
    patch_size: Sequence[int],
    slice_axis: int = 2,
) -> list[mt.Transform]:
    """MONAI random transforms for flips, rotation/scaling, elastic deformation, gamma, noise and blur.

    ``keys`` lists ``image``, ``label`` and optionally ``sdm``; labels are resampled with nearest
    neighbour. ``slice_wise`` (2D U-Net) restricts rotation, scaling and blur to the plane of the
    slices across ``slice_axis`` (rotation about that axis) and skips the 3D elastic deformation.
    """
    keys = list(keys)
    modes = ["nearest" if k == "label" else "bilinear" for k in keys]
    out: list[mt.Transform] = []
    for axis in (0, 1, 2):
        if aug.get("flip", 0) > 0:
            out.append(mt.RandFlipd(keys, prob=float(aug["flip"]), spatial_axis=axis))
    rot = math.radians(float(aug.get("rotate_deg", 0.0)))
    if aug.get("affine", 0) > 0:
        scale = float(aug.get("scale", 0.0))
        out.append(
            mt.RandAffined(
                keys,
                prob=float(aug["affine"]),
                rotate_range=_per_axis(rot, slice_wise, slice_axis, on_slice_axis=True),
                scale_range=_per_axis(scale, slice_wise, slice_axis, on_slice_axis=False),
                mode=modes,
                padding_mode="border",
                spatial_size=patch_size,
                cache_grid=True,
            )
        )
    if aug.get("elastic", 0) > 0 and not slice_wise:
        out.append(
            mt.Rand3DElasticd(
                keys,
                sigma_range=(5.0, 7.0),
                magnitude_range=(50.0, 150.0),
                prob=float(aug["elastic"]),
                mode=modes,
                padding_mode="border",
            )
        )
    if aug.get("gamma", 0) > 0:
        out.append(mt.RandAdjustContrastd("image", prob=float(aug["gamma"]), gamma=(0.7, 1.5)))
    if aug.get("noise", 0) > 0:
        out.append(mt.RandGaussianNoised("image", prob=float(aug["noise"]), std=0.1))
    if aug.get("blur", 0) > 0:
        out.append(
            mt.RandGaussianSmoothd(
                "image",
                prob=float(aug["blur"]),
                sigma_x=(0.0, 0.0) if slice_wise and slice_axis == 0 else (0.5, 1.0),
                sigma_y=(0.0, 0.0) if slice_wise and slice_axis == 1 else (0.5, 1.0),
                sigma_z=(0.0, 0.0) if slice_wise and slice_axis == 2 else (0.5, 1.0),
            )
        )
    return out


def _patch_sampler(keys: list[str], patch: list[int], ratio: float, n_classes: int) -> mt.MapTransform:
    """Patch centres: ``ratio`` of them on the structure, the rest on background.

    One structure: :class:`~monai.transforms.RandCropByPosNegLabeld`. Several classes: nnU-Net's class-balanced
    oversampling, :class:`~monai.transforms.RandCropByLabelClassesd` with the foreground share split evenly over
    the classes, so a small class (a necrotic core inside its rim) is the centre of as many patches as a large one
    (a case without a class gives its share to the others).
    """
    if n_classes <= 2:
        return mt.RandCropByPosNegLabeld(
            keys, label_key="label", spatial_size=patch, pos=ratio, neg=1.0 - ratio, num_samples=1, allow_smaller=False
        )
    share = ratio / (n_classes - 1)
    return mt.RandCropByLabelClassesd(
        keys,
        label_key="label",
        spatial_size=patch,
        ratios=[1.0 - ratio, *([share] * (n_classes - 1))],
        num_classes=n_classes,
        num_samples=1,
        allow_smaller=False,
        warn=False,
    )


def patch_dataset(cases: Sequence[Case], settings: Mapping[str, Any], *, with_sdm: bool) -> CacheDataset:
    """Cached dataset whose items are randomly cropped, augmented patches of the cases.

    Each item is a one-element list of dicts with tensors ``image`` ``(C, *patch)``, ``label``
    ``(1, *patch)`` and (boundary loss) ``sdm`` ``(classes - 1, *patch)``. Seed it with
    ``dataset.transform.set_random_state(seed)``.
    """
    train = settings["train"]
    patch = [int(p) for p in train["patch_size"]]
    n_classes = int(settings["num_classes"])
    keys = ["image", "label", *(["sdm"] if with_sdm else [])]
    data: list[dict[str, Any]] = []
    for case in cases:
        if case.label is None:
            raise DataError("training case has no label", subject=case.subject)
        if any(s < p for s, p in zip(case.image.shape[1:], patch, strict=True)):
            logger.info(
                "subject %s: image %s is smaller than the patch %s; zero-padded",
                case.subject,
                case.image.shape[1:],
                patch,
            )
        item: dict[str, Any] = {"image": case.image, "label": case.label}
        if with_sdm:
            item["sdm"] = signed_distance_map(case.label[0], n_classes)
        data.append(item)
    ratio = float(train["foreground_ratio"])
    if not 0.0 <= ratio <= 1.0:
        raise DataError(f"segmentation.train.foreground_ratio = {ratio} must lie in [0, 1]")
    aug = settings["augment"] if train.get("augment", True) else {}
    slice_wise = settings["model"]["architecture"] == "unet2d"
    axis = slice_axis(settings["model"])
    pipeline = [
        mt.EnsureTyped(keys, track_meta=False),
        mt.SpatialPadd(keys, spatial_size=patch, mode="constant"),
        _patch_sampler(keys, patch, ratio, n_classes),
        *augmentations(aug, keys, slice_wise=slice_wise, patch_size=patch, slice_axis=axis),
        mt.EnsureTyped(keys, track_meta=False, dtype=None),
    ]
    return CacheDataset(data, transform=mt.Compose(pipeline), cache_rate=1.0, num_workers=0, progress=False)
