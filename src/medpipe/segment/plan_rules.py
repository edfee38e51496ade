"""nnU-Net v2's planning rules, ported line by line, and a memory estimate of medpipe's U-Net.

Source: MIC-DKFZ/nnUNet 2.8.1 (``pyproject.toml`` version), commit 0e495086eb10:

* :func:`target_spacing`: ``ExperimentPlanner.determine_fullres_target_spacing``
  (``nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py``) with
  ``ANISO_THRESHOLD = 3`` (``nnunetv2/configuration.py``);
* :func:`pool_and_conv_props` and :func:`pad_shape`: ``get_pool_and_conv_props`` and ``pad_shape``
  (``.../experiment_planners/network_topology.py``);
* :func:`initial_patch_size` and :func:`fit_patch`: the patch-size search of
  ``ExperimentPlanner.get_plans_for_configuration`` (start from a 256**3 (3D) or 2048**2 (2D) voxel patch with
  the aspect ratio of the spacing, clipped to the median shape; shrink the axis that is largest relative to the
  median shape until the memory estimate of batch 2 fits);
* :func:`batch_size`: the same function's batch rule (what the memory leaves, at most 5 % of the dataset's voxels,
  at least 2);
* :func:`compute_new_shape`: ``nnunetv2/preprocessing/resampling/default_resampling.py``.

nnU-Net estimates memory by instantiating its network (``compute_conv_feature_map_size``) and scales against a
reference measured at 8 GB; medpipe's network is MONAI's DynUNet with residual units and SE blocks, so
:func:`memory_mb` is a formula calibrated on it (see the constants).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medpipe.core.errors import ConfigError

logger = logging.getLogger(__name__)

#: Spacings and shapes: a sequence or a 1D array.
Floats = Sequence[float] | npt.NDArray[np.float64]

#: nnU-Net's ``ANISO_THRESHOLD``: an axis is anisotropic when its spacing is > 3x the next largest.
ANISO_THRESHOLD = 3.0
#: nnU-Net's ``UNet_featuremap_min_edge_length``: an axis is pooled while it has >= 2 * 4 voxels.
FEATUREMAP_MIN_EDGE = 4
#: nnU-Net's ``UNet_min_batch_size``.
MIN_BATCH = 2
#: nnU-Net's ``max_dataset_covered``: one batch sees at most 5 % of the dataset's voxels.
MAX_DATASET_COVERED = 0.05
#: nnU-Net's ``lowres_creation_threshold``: a cascade when the patch holds < 25 % of the median image.
LOWRES_THRESHOLD = 0.25
#: nnU-Net's ``UNet_max_features_3d`` / ``UNet_max_features_2d``.
MAX_FEATURES = {3: 320, 2: 512}
#: Voxels of nnU-Net's initial patch (256**3 in 3D, 2048**2 in 2D) before clipping to the median shape.
INITIAL_PATCH_VOXELS = {3: 256**3, 2: 2048**2}

# Memory estimate of one training step (forward + loss + backward) of medpipe's SEDynUNet, in MiB:
#   MEM_FIXED_MB + PARAM_BYTES * params / 2**20 + ACTIVATION_COPIES * 4 B * batch * sum_l(f_l * V_l) / 2**20
# f_l: filters of level l, V_l: voxels of level l of one sample (2D: one slice; batch counts slices).
# Calibrated once on CPU (torch 2.13, MONAI 1.6.1, num_res_units 1, SE on, 2 classes, one thread): peak resident
# memory (VmHWM reset through /proc/self/clear_refs) of a fresh process over net(x) + DiceCE + backward, median
# of 3 runs; least squares gave 92 MiB + 14.7 copies; the constants are rounded up. Recorded points
# (patch, batch, filters: measured MiB / this estimate):
#   3D 32^3 b2 [8..64]: 81/148     3D 64^3 b1 [8..64]: 332/276     3D 64^3 b2 [8..64]: 489/446
#   3D 64^3 b4 [8..64]: 742/786    3D 96^3 b2 [8..64]: 1239/1253   3D 64^3 b2 [16..128]: 715/802
#   3D 64^3 b2 [8..128] (4 pools): 474/463   3D 48x64x80 b2 [8..64]: 450/424
#   2D 128^2 b8 [8..128]: 169/231  2D 256^2 b8 [8..128]: 554/603   2D 256^2 b32 [8..128]: 1942/2091
#   2D 256^2x4 b2 [16..256]: 970/1122
# i.e. within -17 % / +16 % where more than 300 MiB were measured (smaller steps are over-estimated);
# tests/segment/test_plan_rules.py checks the formula against this table. Not calibrated: CUDA (cuDNN
# workspaces; bf16 AMP halves the activations, so the estimate is on the safe side) and many classes.
MEM_FIXED_MB = 100.0
ACTIVATION_COPIES = 16.0
#: Weights, gradients and AdamW's two moments, float32.
PARAM_BYTES = 16.0
#: Parameters of the network ~= PARAM_FACTOR * kernel volume * sum_l f_l**2 (within 7 % of DynUNet's count).
PARAM_FACTOR = 2.5


def target_spacing(spacings: npt.ArrayLike, shapes_after_crop: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], str]:
    """nnU-Net's full-resolution target spacing and the reason for it.

    The median spacing per axis; but when the axis with the largest median spacing is anisotropic (its spacing
    > ``ANISO_THRESHOLD`` x the largest other spacing) **and** has few voxels (its median size x 3 < the smallest
    other median size), that axis gets the 10th percentile of its spacings, not below the largest other spacing
    (then that spacing + 1e-5).
    """
    sp = np.atleast_2d(np.asarray(spacings, dtype=np.float64))
    target = np.percentile(sp, 50, 0)
    target_size = np.percentile(np.atleast_2d(np.asarray(shapes_after_crop, dtype=np.float64)), 50, 0)
    worst = int(np.argmax(target))
    other = [i for i in range(len(target)) if i != worst]
    other_spacing = max(target[i] for i in other)
    other_size = min(target_size[i] for i in other)
    aniso_spacing = target[worst] > ANISO_THRESHOLD * other_spacing
    aniso_voxels = target_size[worst] * ANISO_THRESHOLD < other_size
    median = [round(float(v), 4) for v in target]
    ratio = target[worst] / other_spacing
    if not (aniso_spacing and aniso_voxels):
        why = (
            f"median spacing {median} mm (nnU-Net: axis {worst} spacing {ratio:.2f}x the next largest, median "
            f"size {target_size[worst]:g} vs {other_size:g}; the 10th-percentile rule needs > {ANISO_THRESHOLD:g}x "
            f"and size x {ANISO_THRESHOLD:g} < {other_size:g})"
        )
        return target, why
    p10 = float(np.percentile(sp[:, worst], 10))
    target[worst] = max(other_spacing, p10) + 1e-5 if p10 < other_spacing else p10
    why = (
        f"median spacing {median} mm, axis {worst} anisotropic (spacing {ratio:.2f}x > {ANISO_THRESHOLD:g}x the "
        f"next largest, median size {target_size[worst]:g} x {ANISO_THRESHOLD:g} < {other_size:g}): that axis "
        f"gets the 10th percentile of its spacings, {p10:.4g} mm, not below {other_spacing:g} mm (nnU-Net)"
    )
    return target, why


def compute_new_shape(shape: Floats, spacing: Floats, new_spacing: Floats) -> npt.NDArray[np.int64]:
    """Image size after resampling from ``spacing`` to ``new_spacing`` (nnU-Net: ``round(old / new * size)``)."""
    return np.array([round(s / n * k) for s, n, k in zip(spacing, new_spacing, shape, strict=True)], dtype=np.int64)


def pad_shape(shape: Sequence[float], must_be_divisible_by: Sequence[int]) -> npt.NDArray[np.int64]:
    """``shape`` rounded up to multiples of ``must_be_divisible_by`` (nnU-Net's ``pad_shape``)."""
    new = [shape[i] + must_be_divisible_by[i] - shape[i] % must_be_divisible_by[i] for i in range(len(shape))]
    for i in range(len(shape)):
        if shape[i] % must_be_divisible_by[i] == 0:
            new[i] -= must_be_divisible_by[i]
    return np.array(new).astype(int)


@dataclass(frozen=True)
class PoolProps:
    """Result of :func:`pool_and_conv_props` (nnU-Net's five return values)."""

    num_pool_per_axis: tuple[int, ...]
    pool_kernel_sizes: tuple[tuple[int, ...], ...]
    conv_kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    must_be_divisible_by: tuple[int, ...]


def _pool_step(
    spacing: list[float], size: list[float], num_pool: list[int], min_fm: int, max_numpool: int
) -> list[int]:
    """Axes pooled in the next stage (empty: stop), nnU-Net's rules in order."""
    dim = len(spacing)
    valid = [i for i in range(dim) if size[i] >= 2 * min_fm]
    if not valid:
        return []
    min_spacing = min(spacing[i] for i in valid)
    valid = [i for i in valid if spacing[i] / min_spacing < 2]
    valid = [i for i in valid if num_pool[i] < max_numpool]
    if len(valid) == 1 and size[valid[0]] < 3 * min_fm:
        return []
    return valid


def pool_and_conv_props(
    spacing: Floats,
    patch_size: Floats,
    min_feature_map_size: int = FEATUREMAP_MIN_EDGE,
    max_numpool: int = 999999,
) -> PoolProps:
    """nnU-Net's ``get_pool_and_conv_props``: pooling per axis and the patch padded to fit it.

    Each stage pools (by 2) every axis that still has >= ``2 * min_feature_map_size`` voxels and whose current
    spacing is < 2x the smallest current spacing of those axes; a lone such axis is pooled only while it has
    >= ``3 * min_feature_map_size`` voxels. Kernels are 3 on axes within 2x of the finest spacing, else 1.
    """
    dim = len(spacing)
    cur_spacing, cur_size = [float(s) for s in spacing], [float(s) for s in patch_size]
    pools: list[tuple[int, ...]] = [(1,) * dim]
    convs: list[tuple[int, ...]] = []
    num_pool, kernel = [0] * dim, [1] * dim
    while axes := _pool_step(cur_spacing, cur_size, num_pool, min_feature_map_size, max_numpool):
        for d in range(dim):
            if kernel[d] != 3 and cur_spacing[d] / min(cur_spacing) < 2:
                kernel[d] = 3
        for v in axes:
            num_pool[v] += 1
            cur_spacing[v] *= 2
            cur_size[v] = float(np.ceil(cur_size[v] / 2))
        pools.append(tuple(2 if d in axes else 1 for d in range(dim)))
        convs.append(tuple(kernel))
    div = tuple(int(v) for v in 2 ** np.array(num_pool))
    padded = pad_shape(list(patch_size), div)
    convs.append((3,) * dim)
    return PoolProps(tuple(num_pool), tuple(pools), tuple(convs), tuple(int(v) for v in padded), div)


def initial_patch_size(spacing: Floats, median_shape: Floats) -> npt.NDArray[np.float64]:
    """nnU-Net's first patch: 256**3 (2D: 2048**2) voxels shaped like ``1 / spacing``, clipped to the median."""
    tmp = 1.0 / np.asarray(spacing, dtype=np.float64)
    dim = len(tmp)
    start = [round(v) for v in tmp * (INITIAL_PATCH_VOXELS[dim] / np.prod(tmp)) ** (1 / dim)]
    return np.array([min(i, j) for i, j in zip(start, median_shape[:dim], strict=True)], dtype=np.float64)


def unet_features(base: int, depth: int, dims: int) -> tuple[int, ...]:
    """Filters per level: ``base * 2**l`` for ``depth + 1`` levels, at most nnU-Net's 320 (3D) / 512 (2D)."""
    return tuple(min(MAX_FEATURES[dims], base * 2**level) for level in range(depth + 1))


def memory_mb(patch: Sequence[int], batch: int, features: Sequence[int], dims: int) -> float:
    """Estimated peak memory (MiB) of one training step; ``patch`` has 3 entries (2D: the 3rd counts slices).

    ``dims`` 3: levels halve every axis; 2: levels halve the first two axes, and ``batch * patch[2]`` slices
    are the samples. See the module constants for the formula and its calibration.
    """
    if dims == 2:
        samples, vox, kernel = batch * int(patch[2]), float(patch[0]) * float(patch[1]), 9
    else:
        samples, vox, kernel = batch, float(np.prod([float(p) for p in patch])), 27
    act = sum(f * vox / (2**dims) ** level for level, f in enumerate(features))
    params = PARAM_FACTOR * kernel * sum(f * f for f in features)
    return MEM_FIXED_MB + (PARAM_BYTES * params + ACTIVATION_COPIES * 4.0 * samples * act) / 2**20


def batch_size(
    estimate: Callable[[int], float], budget_mb: float, patch_voxels: float, dataset_voxels: float
) -> tuple[int, str]:
    """nnU-Net's batch rule: what ``budget_mb`` fits (``estimate(batch)`` in MiB, linear in the batch), at most
    5 % of the dataset's voxels per batch, at least 2. Returns the batch size and the reason."""
    one, two = estimate(1), estimate(2)
    per_sample = max(two - one, 1e-9)
    fit = int((budget_mb - (one - per_sample)) // per_sample)
    cap = round(dataset_voxels * MAX_DATASET_COVERED / patch_voxels)
    value = max(min(fit, cap), MIN_BATCH)
    why = (
        f"memory fits {fit} (estimate {one:.0f} MiB at batch 1, +{per_sample:.0f} MiB per sample, budget "
        f"{budget_mb:.0f} MiB); 5 % of the dataset's voxels allows {cap}; at least {MIN_BATCH} (nnU-Net)"
    )
    return value, why


def _shrink(
    spacing: Floats, median_shape: Floats, patch: list[int], div: Sequence[int], fixed: bool
) -> tuple[list[int], int]:
    """One nnU-Net reduction: the axis largest relative to the median shape loses one divisor step."""
    axis = int(np.argsort([p / m for p, m in zip(patch, median_shape, strict=False)])[-1])
    tmp = list(patch)
    tmp[axis] -= div[axis]
    if tmp[axis] < 1:
        return patch, -1
    step = div[axis] if fixed else pool_and_conv_props(spacing, tmp).must_be_divisible_by[axis]
    patch[axis] -= step
    return patch, axis


def fit_patch(
    spacing: Floats,
    median_shape: Floats,
    estimate: Callable[[Sequence[int], PoolProps], float],
    budget_mb: float,
    divisor: Sequence[int] | None = None,
) -> tuple[PoolProps, float]:
    """nnU-Net's patch search: shrink until ``estimate(patch, props)`` (MiB, batch 2) fits ``budget_mb``.

    ``divisor`` given (the user typed the network's strides): the patch steps in multiples of it instead of
    nnU-Net's topology. Returns the final pooling properties (with the patch) and its estimate.

    Raises
    ------
    ConfigError
        When no patch fits, with the budget and the estimate of the smallest patch tried.
    """
    dim = len(spacing)
    props = pool_and_conv_props(spacing, initial_patch_size(spacing, median_shape))
    if divisor is not None:
        start = [max(int(d), int(p) // int(d) * int(d)) for p, d in zip(props.patch_size, divisor, strict=True)]
        props = PoolProps(props.num_pool_per_axis, (), (), tuple(start), tuple(int(d) for d in divisor))
    while (mem := estimate(props.patch_size, props)) > budget_mb:
        patch, axis = _shrink(
            spacing, median_shape[:dim], list(props.patch_size), props.must_be_divisible_by, divisor is not None
        )
        if axis < 0:
            raise ConfigError(
                f"memory budget {budget_mb:.0f} MiB is below the estimate {mem:.0f} MiB of the smallest patch "
                f"{list(props.patch_size)} at batch {MIN_BATCH}; raise the memory budget"
            )
        if divisor is None:
            props = pool_and_conv_props(spacing, patch)
        else:
            props = PoolProps(props.num_pool_per_axis, (), (), tuple(patch), props.must_be_divisible_by)
    return props, mem
