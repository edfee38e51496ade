"""Patch, network depth, filters, batch and cascade of a plan (:mod:`.plan`), from nnU-Net's rules in
:mod:`.plan_rules` and a memory budget.

The functions are pure: they read the user's typed values through ``typed(key)`` (``MISSING`` when absent) and
return the decisions as ``(key, value, rule)`` triples, which :func:`medpipe.segment.plan.make_plan` records.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from medpipe.core.errors import ConfigError
from medpipe.segment import plan_rules as rules
from medpipe.segment.plan_rules import Floats
from medpipe.segment.settings import check_slice_axis

logger = logging.getLogger(__name__)

#: Returned by ``typed(key)`` for a key the user did not type.
MISSING: Any = object()
#: Largest ``cascade.coarse_factor`` tried.
MAX_COARSE_FACTOR = 8
#: Fewest poolings of MONAI's DynUNet (``len(strides) >= 3`` with the input stage).
MIN_DEPTH = 2

Typed = Callable[[str], Any]
Decisions = list[tuple[str, Any, str]]


@dataclass(frozen=True)
class NetworkPlan:
    """The network part of a plan.

    Attributes
    ----------
    dims
        2 (slice-wise) or 3.
    patch
        ``segmentation.train.patch_size`` (3 entries; 2D: 1 slice on ``slice_axis``).
    features, strides
        ``segmentation.model.channels`` and ``strides``.
    batch
        ``segmentation.train.batch_size``.
    memory_mb
        Estimated memory of one step at ``batch`` (fine and coarse stage for a cascade).
    """

    dims: int
    patch: tuple[int, ...]
    features: tuple[int, ...]
    strides: tuple[int, ...]
    batch: int
    memory_mb: float
    slice_axis: int = 2


def axis_order(dims: int, slice_axis: int) -> list[int]:
    """Array axes in planning order: 2D plans the two in-plane axes first and the slice axis last.

    The patch search and the memory estimate (:func:`.plan_rules.memory_mb`) count slices on the last
    entry; a 2D plan across ``slice_axis`` runs on the axes in this order and is put back in array order.

    Raises
    ------
    ConfigError
        When ``slice_axis`` is not 0, 1 or 2.
    """
    slice_axis = check_slice_axis(slice_axis)
    if dims != 2:
        return [0, 1, 2]
    return [*(a for a in range(3) if a != slice_axis), slice_axis]


def _in_array_order(values: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """``values`` given in planning ``order`` (:func:`axis_order`), in array order."""
    out = [0, 0, 0]
    for value, axis in zip(values, order, strict=True):
        out[axis] = int(value)
    return tuple(out)


def _trailing_pools(n: int) -> int:
    """How often ``n`` halves evenly."""
    k = 0
    while n > 1 and n % 2 == 0:
        n, k = n // 2, k + 1
    return k


def _patch3(axes: Sequence[int], dims: int) -> tuple[int, ...]:
    """Patch with 3 entries: a 2D patch is one slice thick."""
    return tuple(int(v) for v in axes) + ((1,) if dims == 2 else ())


def _planned_depth(props: rules.PoolProps, patch: Sequence[int], final: bool) -> tuple[int, str]:
    """One depth for every axis from nnU-Net's per-axis pooling, at least DynUNet's :data:`MIN_DEPTH`."""
    depth = min(min(props.num_pool_per_axis), *(_trailing_pools(int(p)) for p in patch))
    why = (
        f"nnU-Net pools the axes {list(props.num_pool_per_axis)} times (pool while >= "
        f"{2 * rules.FEATUREMAP_MIN_EDGE} voxels and spacing < 2x the finest); strides apply to every axis: "
        f"depth {depth}, the smallest count"
    )
    if depth >= MIN_DEPTH:
        return depth, why
    if final and min(_trailing_pools(int(p)) for p in patch) < MIN_DEPTH:
        raise ConfigError(
            f"no network fits: the patch {[int(p) for p in patch]} must be a multiple of {2**MIN_DEPTH} on every "
            f"axis for the {MIN_DEPTH} poolings of DynUNet"
        )
    return MIN_DEPTH, f"{why}, raised to DynUNet's minimum {MIN_DEPTH} (feature maps below 4 voxels on some axis)"


def _topology(
    props: rules.PoolProps, dims: int, typed: Typed, base: int, patch: Sequence[int], *, final: bool = True
) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """Filters, strides and the reason: typed values, else nnU-Net's per-axis pooling at one depth.

    ``final`` False (during the patch search): a patch too small for :data:`MIN_DEPTH` poolings is estimated
    at that depth instead of refused.
    """
    t_strides, t_channels = typed("segmentation.model.strides"), typed("segmentation.model.channels")
    if t_strides is not MISSING:
        strides = tuple(int(s) for s in t_strides)
        why = f"typed strides {list(strides)}"
    elif t_channels is not MISSING:
        strides = (2,) * (len(t_channels) - 1)
        why = f"one stride 2 per level of the typed channels {list(t_channels)}"
    else:
        depth, why = _planned_depth(props, patch, final)
        strides = (2,) * depth
    features = (
        tuple(int(c) for c in t_channels)
        if t_channels is not MISSING
        else rules.unet_features(base, len(strides), dims)
    )
    if len(features) != len(strides) + 1:
        raise ConfigError(
            f"segmentation.model: channels {list(features)} need {len(features) - 1} strides, got {list(strides)}"
        )
    return features, strides, why


def _fit(
    dims: int, spacing: Floats, median: Floats, budget_mb: float, typed: Typed, base: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], float, str, str]:
    """Patch (3 entries), filters, strides, estimate at batch 2, and the reasons for the patch and the depth."""
    t_patch, t_strides = typed("segmentation.train.patch_size"), typed("segmentation.model.strides")
    if t_patch is not MISSING:
        axes = [int(p) for p in t_patch][:dims]
        props = rules.pool_and_conv_props(spacing, axes)
        features, strides, depth_why = _topology(props, dims, typed, base, axes)
        mem = rules.memory_mb(t_patch, rules.MIN_BATCH, features, dims)
        if mem > budget_mb:
            logger.warning("typed patch %s: estimate %.0f MiB exceeds the budget %.0f MiB", t_patch, mem, budget_mb)
        return tuple(int(p) for p in t_patch), features, strides, mem, "typed", depth_why
    divisor = None if t_strides is MISSING else [math.prod(int(s) for s in t_strides)] * dims

    def estimate(axes: Sequence[int], props: rules.PoolProps) -> float:
        features = _topology(props, dims, typed, base, axes, final=False)[0]
        return rules.memory_mb(_patch3(axes, dims), rules.MIN_BATCH, features, dims)

    props, mem = rules.fit_patch(spacing, median, estimate, budget_mb, divisor)
    if divisor is None:  # DynUNet pools at least MIN_DEPTH times: pad (nnU-Net's pad_shape) where nnU-Net pools less
        padded = rules.pad_shape(props.patch_size, [2**MIN_DEPTH] * dims)
        props = replace(props, patch_size=tuple(int(p) for p in padded))
        mem = estimate(props.patch_size, props)
    start = [int(v) for v in rules.initial_patch_size(spacing, median)]
    features, strides, depth_why = _topology(props, dims, typed, base, props.patch_size)
    why = (
        f"nnU-Net patch search at spacing {[round(float(s), 4) for s in spacing]} mm: start {start} "
        f"({'256^3' if dims == 3 else '2048^2'} voxels shaped by the spacing, clipped to the median image "
        f"{[float(m) for m in median]}), shrink the axis largest relative to the median until the estimate "
        f"{mem:.0f} MiB at batch {rules.MIN_BATCH} fits {budget_mb:.0f} MiB"
    )
    if dims == 2:
        why += "; 2D: one slice per patch, the batch counts slices"
    return _patch3(props.patch_size, dims), features, strides, mem, why, depth_why


def _typed_in_order(typed: Typed, order: Sequence[int]) -> Typed:
    """``typed`` with a typed ``segmentation.train.patch_size`` given in planning ``order``."""
    if list(order) == [0, 1, 2]:
        return typed

    def reordered(key: str) -> Any:
        value = typed(key)
        if key != "segmentation.train.patch_size" or value is MISSING:
            return value
        if len(value) != 3:
            raise ConfigError(f"segmentation.train.patch_size {list(value)} must have 3 entries")
        return [value[a] for a in order]

    return reordered


def plan_network(
    typed: Typed,
    dims: int,
    spacing: npt.NDArray[np.float64],
    median_shape: npt.NDArray[np.float64],
    budget_mb: float,
    dataset_voxels: float,
    defaults: Mapping[str, Any],
    slice_axis: int = 2,
) -> tuple[NetworkPlan, Decisions]:
    """Patch, strides, filters and batch for ``dims`` under ``budget_mb`` (decisions: module docstring).

    ``slice_axis`` (2D): the array axis the patch is one slice thick on; the search runs on the two others.

    Raises
    ------
    ConfigError
        When no patch fits the budget (from :func:`medpipe.segment.plan_rules.fit_patch`), the typed
        channels and strides disagree, or ``slice_axis`` is not 0, 1 or 2.
    """
    base = int(defaults["model"]["channels"][0])
    order = axis_order(dims, slice_axis)
    patch, features, strides, _, patch_why, depth_why = _fit(
        dims, spacing[order][:dims], median_shape[order][:dims], budget_mb, _typed_in_order(typed, order), base
    )
    if dims == 2 and slice_axis != 2:
        patch_why += f" (slices across axis {slice_axis}; the search ran on axes {order[:2]})"
    t_batch = typed("segmentation.train.batch_size")
    batch, batch_why = rules.batch_size(
        lambda b: rules.memory_mb(patch, b, features, dims), budget_mb, float(np.prod(patch)), dataset_voxels
    )
    batch = batch if t_batch is MISSING else int(t_batch)
    memory = rules.memory_mb(patch, batch, features, dims)
    patch = _in_array_order(patch, order)
    net = NetworkPlan(dims, patch, features, strides, batch, memory, slice_axis if dims == 2 else 2)
    channels_why = (
        f"{base} filters (first entry of the schema default; nnU-Net starts at 32) doubling per level, at most "
        f"{rules.MAX_FEATURES[dims]} (nnU-Net)"
    )
    decisions: Decisions = [
        ("segmentation.train.patch_size", list(patch), patch_why),
        ("segmentation.model.strides", list(strides), depth_why),
        ("segmentation.model.channels", list(features), channels_why),
        ("segmentation.train.batch_size", batch, batch_why),
    ]
    return net, decisions


def coarse_shape(full_shape: Floats, factor: int, strides: Sequence[int]) -> tuple[int, ...]:
    """Whole image downsampled by ``factor`` and padded to the total stride (as :func:`.cascade.downsample`)."""
    div = math.prod(int(s) for s in strides)
    return tuple(int(math.ceil(max(1, math.ceil(s / factor)) / div) * div) for s in full_shape)


def _coarse_factor(
    net: NetworkPlan, full_max: Floats, budget_mb: float, typed: Typed
) -> tuple[int | None, Callable[[int], float], str]:
    """Smallest coarse factor whose whole coarse volume fits next to the fine patch at batch 2."""
    t_factor = typed("segmentation.model.cascade.coarse_factor")
    factors = [int(t_factor)] if t_factor is not MISSING else list(range(2, MAX_COARSE_FACTOR + 1))
    for f in factors:
        shape = coarse_shape(full_max, f, net.strides)

        def total(b: int, shape: tuple[int, ...] = shape) -> float:
            fine = rules.memory_mb(net.patch, b, net.features, 3)
            return fine + rules.memory_mb(shape, b, net.features, 3) - rules.MEM_FIXED_MB

        if total(rules.MIN_BATCH) <= budget_mb or t_factor is not MISSING:
            why = (
                f"coarse stage: the largest image {[float(v) for v in full_max]} / {f} -> {list(shape)}; fine patch "
                f"+ coarse volume at batch {rules.MIN_BATCH}: {total(rules.MIN_BATCH):.0f} MiB of {budget_mb:.0f}"
            )
            return f, total, why
    return None, lambda b: math.inf, f"no coarse factor <= {MAX_COARSE_FACTOR} fits {budget_mb:.0f} MiB"


def plan_cascade(
    typed: Typed,
    net: NetworkPlan,
    decisions: Decisions,
    geometry: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]],
    budget_mb: float,
    dataset_voxels: float,
    defaults: Mapping[str, Any],
) -> tuple[NetworkPlan, Decisions, str, str]:
    """3D: cascade or plain patches (rule: :mod:`.plan`).

    ``geometry``: target spacing, median (cropped) shape and largest (uncropped) shape at that spacing. Returns
    the network and its decisions (a cascade only when planned and not typed otherwise, or typed), the
    architecture the rule chooses (recorded against a typed one) and why.
    """
    spacing, median_shape, full_max = geometry
    coverage = float(np.prod(net.patch) / np.prod(median_shape))
    t_arch = typed("segmentation.model.architecture")
    cover = f"the patch {list(net.patch)} holds {100 * coverage:.1f} % of the median image {median_shape.tolist()}"
    if coverage >= rules.LOWRES_THRESHOLD and t_arch != "cascade":
        return net, decisions, "unet3d", f"{cover} (>= {100 * rules.LOWRES_THRESHOLD:g} %: no cascade)"
    fine, fine_decisions = plan_network(typed, 3, spacing, median_shape, budget_mb / 2, dataset_voxels, defaults)
    factor, total, factor_why = _coarse_factor(fine, full_max, budget_mb, typed)
    pct = f"{100 * rules.LOWRES_THRESHOLD:g} %"
    if coverage < rules.LOWRES_THRESHOLD:
        relation = f"< {pct}, nnU-Net's lowres_creation_threshold"
    else:  # only a typed architecture gets here
        relation = f">= {pct}: no cascade by the rule, but segmentation.model.architecture is typed cascade"
    if factor is None:
        return net, decisions, "unet3d", f"{cover} ({relation}: cascade wanted), but {factor_why}: 3D patches"
    why = f"{cover} ({relation}): cascade, the fine patch re-planned with half the budget ({budget_mb / 2:.0f} MiB)"
    if t_arch not in (MISSING, "cascade"):
        return net, decisions, "cascade", why
    batch, batch_why = rules.batch_size(total, budget_mb, float(np.prod(fine.patch)), dataset_voxels)
    t_batch = typed("segmentation.train.batch_size")
    batch = batch if t_batch is MISSING else int(t_batch)
    fine = replace(fine, batch=batch, memory_mb=total(batch))
    fine_decisions = [d for d in fine_decisions if d[0] != "segmentation.train.batch_size"]
    fine_decisions += [
        ("segmentation.train.batch_size", batch, f"fine patch + coarse volume: {batch_why}"),
        ("segmentation.model.cascade.coarse_factor", factor, factor_why),
    ]
    return fine, fine_decisions, "cascade", why
