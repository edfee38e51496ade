"""nnU-Net v2's planning rules as ported, checked on cases worked out by hand from its source, and the memory
estimate against the recorded calibration measurements."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from medpipe.core.errors import ConfigError
from medpipe.segment.plan_rules import (
    PoolProps,
    batch_size,
    compute_new_shape,
    fit_patch,
    initial_patch_size,
    memory_mb,
    pad_shape,
    pool_and_conv_props,
    target_spacing,
)

SPACINGS = [[1, 1, 5], [1, 1, 6], [1, 1, 5], [1, 1, 4]]


def test_target_spacing_takes_the_10th_percentile_of_an_anisotropic_axis_with_few_voxels() -> None:
    # median [1, 1, 5]: 5 > 3 x 1, and 30 slices x 3 = 90 < 200 voxels in-plane: np.percentile([4, 5, 5, 6], 10)
    target, why = target_spacing(SPACINGS, [[200, 200, 30]] * 4)
    assert target.tolist() == pytest.approx([1.0, 1.0, 4.3])
    assert "10th percentile" in why


def test_target_spacing_keeps_the_median_when_the_axis_has_enough_voxels() -> None:
    # 80 slices x 3 = 240 >= 200: has_aniso_voxels is false
    target, why = target_spacing(SPACINGS, [[200, 200, 80]] * 4)
    assert target.tolist() == [1.0, 1.0, 5.0]
    assert why.startswith("median spacing") and "median size 80 vs 200" in why


def test_target_spacing_keeps_the_median_below_the_anisotropy_threshold() -> None:
    # 2.9 is not > 3 x 1 (the rule is strict)
    target, _ = target_spacing([[1, 1, 2.9], [1, 1, 3.0], [1, 1, 2.9]], [[200, 200, 10]] * 3)
    assert target.tolist() == [1.0, 1.0, 2.9]


def test_target_spacing_never_goes_below_the_other_axes() -> None:
    # 10th percentile of [0.5, 0.5, 10, 10, 10] is 0.5 < 3: max(3, 0.5) + 1e-5
    spacings = [[3, 3, 10]] * 3 + [[3, 3, 0.5]] * 2
    target, _ = target_spacing(spacings, [[200, 200, 20]] * 5)
    assert target.tolist() == pytest.approx([3.0, 3.0, 3.00001], abs=1e-9)


def test_pooling_of_an_isotropic_cube() -> None:
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: five pools per axis, all kernels 3
    props = pool_and_conv_props([1, 1, 1], [128, 128, 128])
    assert props.num_pool_per_axis == (5, 5, 5)
    assert props.pool_kernel_sizes == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert props.conv_kernel_sizes == ((3, 3, 3),) * 6
    assert props.patch_size == (128, 128, 128)
    assert props.must_be_divisible_by == (32, 32, 32)


def test_pooling_waits_for_a_coarse_axis_and_stops_below_8_voxels() -> None:
    # spacing 1x1x3, patch 160x160x40: stage 1 pools x, y only (3 / 1 >= 2, kernel 1 on z); then all three while z
    # has >= 8 voxels (40 -> 20 -> 10 -> 5); then x, y once more (10 -> 5)
    props = pool_and_conv_props([1, 1, 3], [160, 160, 40])
    assert props.num_pool_per_axis == (5, 5, 3)
    assert props.pool_kernel_sizes == ((1, 1, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 1))
    assert props.conv_kernel_sizes == ((3, 3, 1),) + ((3, 3, 3),) * 5
    assert props.patch_size == (160, 160, 40)
    assert props.must_be_divisible_by == (32, 32, 8)


def test_a_lone_axis_is_pooled_only_while_it_has_12_voxels() -> None:
    # 64x8x8: one pool of all (-> 32x4x4); then x alone while >= 3 * 4: 32 -> 16 -> 8, and 8 < 12 stops
    props = pool_and_conv_props([1, 1, 1], [64, 8, 8])
    assert props.num_pool_per_axis == (3, 1, 1)
    assert props.must_be_divisible_by == (8, 2, 2)


def test_the_patch_is_padded_to_the_pooling() -> None:
    # 100 -> 50 -> 25 -> 13 -> 7: four pools, 100 padded up to 112
    props = pool_and_conv_props([1, 1, 1], [100, 100, 100])
    assert props.num_pool_per_axis == (4, 4, 4)
    assert props.patch_size == (112, 112, 112)
    assert pad_shape([96, 100], [32, 16]).tolist() == [96, 112]


def test_initial_patch_and_resampled_shape() -> None:
    # 256^3 voxels shaped like 1 / spacing: 1x1x4 mm -> 406 x 406 x 102, clipped to the median shape
    assert initial_patch_size([1.0, 1.0, 4.0], [500, 300, 400]).tolist() == [406, 300, 102]
    assert compute_new_shape([100, 100, 20], [0.8, 0.8, 5.0], [1.0, 1.0, 2.5]).tolist() == [80, 80, 40]


# Calibration measurements of plan_rules.py (peak MiB of one CPU training step): patch, batch, filters, dims, MiB.
MEASURED = [
    ((64, 64, 64), 1, (8, 16, 32, 64), 3, 332),
    ((64, 64, 64), 2, (8, 16, 32, 64), 3, 489),
    ((64, 64, 64), 4, (8, 16, 32, 64), 3, 742),
    ((96, 96, 96), 2, (8, 16, 32, 64), 3, 1239),
    ((64, 64, 64), 2, (16, 32, 64, 128), 3, 715),
    ((64, 64, 64), 2, (8, 16, 32, 64, 128), 3, 474),
    ((48, 64, 80), 2, (8, 16, 32, 64), 3, 450),
    ((256, 256, 1), 8, (8, 16, 32, 64, 128), 2, 554),
    ((256, 256, 1), 32, (8, 16, 32, 64, 128), 2, 1942),
    ((256, 256, 4), 2, (16, 32, 64, 128, 256), 2, 970),
]


@pytest.mark.parametrize(("patch", "batch", "features", "dims", "measured"), MEASURED)
def test_memory_estimate_matches_the_calibration(
    patch: tuple[int, ...], batch: int, features: tuple[int, ...], dims: int, measured: float
) -> None:
    assert 0.8 * measured <= memory_mb(patch, batch, features, dims) <= 1.2 * measured


def test_patch_search_shrinks_the_axis_largest_relative_to_the_median() -> None:
    # median 200 x 100 x 100 at 1 mm: the start (200, 100, 100) is padded to the pooling (x pools 5 times, y and z 4:
    # 224 x 112 x 112), then the axis largest relative to the median loses one divisor step until batch 2 fits
    def estimate(patch: Sequence[int], props: PoolProps) -> float:
        return memory_mb(patch, 2, (8, 16, 32, 64, 128), 3)

    props, mem = fit_patch([1.0, 1.0, 1.0], [200.0, 100.0, 100.0], estimate, 1000.0)
    assert mem <= 1000.0
    assert props.patch_size == (160, 64, 64)
    assert memory_mb((160, 64, 80), 2, (8, 16, 32, 64, 128), 3) > 1000.0  # one step less would not fit
    assert all(p % d == 0 for p, d in zip(props.patch_size, props.must_be_divisible_by, strict=True))
    with pytest.raises(ConfigError, match=r"memory budget 50 MiB is below the estimate \d+ MiB of the smallest patch"):
        fit_patch([1.0, 1.0, 1.0], [200.0, 100.0, 100.0], estimate, 50.0)


def test_batch_size_is_at_least_two_and_at_most_5_percent_of_the_dataset() -> None:
    def est(b: int) -> float:
        return 100.0 + 50.0 * b

    assert batch_size(est, 1000.0, 1000.0, 1e9)[0] == 18
    assert batch_size(est, 1000.0, 1000.0, 1e5)[0] == 5  # 5 % of 1e5 voxels / 1000 per patch
    assert batch_size(est, 120.0, 1000.0, 1e9)[0] == 2
