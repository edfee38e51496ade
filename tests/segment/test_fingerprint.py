"""Training fingerprint: ranges of grid and size, foreground intensities per channel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.errors import DataError, GeometryError
from medpipe.core.io import save_nifti
from medpipe.segment.fingerprint import (
    FG_SAMPLES_PER_CASE,
    TrainingFingerprint,
    compute_fingerprint,
    even_sample,
)

from .conftest import AFFINE, make_case


def test_fingerprint_matches_numpy_on_the_pooled_foreground(tmp_path: Path) -> None:
    small = make_case(tmp_path, "A", 0)
    big = make_case(tmp_path, "B", 1, shape=(30, 24, 10))
    big_affine = AFFINE @ np.diag([0.5, 1.0, 2.0, 1.0])
    for path in [*big[0], big[1]]:  # the second case on another voxel size
        save_nifti(np.asarray(nib.load(path).dataobj), big_affine, path)
    fp = compute_fingerprint([small[0], big[0]], [small[1], big[1]], subjects=["A", "B"], channels=["c0", "c1"])
    assert fp.n_cases == 2
    assert fp.shape_min == (20, 24, 10) and fp.shape_max == (30, 24, 18)
    assert fp.spacing_mm_min == (1.5, 3.0, 3.0) and fp.spacing_mm_max == (3.0, 3.0, 6.0)
    for c, stats in enumerate(fp.channels):
        values = np.concatenate(
            [
                np.asarray(nib.load(images[c]).dataobj)[np.asarray(nib.load(label).dataobj) > 0]
                for images, label in (small, big)
            ]
        ).astype(np.float64)
        lo, med, hi = np.percentile(values, [0.5, 50, 99.5])
        assert stats.channel == f"c{c}" and stats.n_voxels == values.size
        assert stats.median == pytest.approx(med, abs=1e-6)
        assert stats.percentile_00_5 == pytest.approx(lo, abs=1e-6)
        assert stats.percentile_99_5 == pytest.approx(hi, abs=1e-6)
        assert stats.mean == pytest.approx(values.mean(), abs=1e-6)
        assert stats.sd == pytest.approx(values.std(), abs=1e-6)
    assert TrainingFingerprint.from_json(fp.to_json()) == fp


def test_foreground_sample_is_even_and_capped() -> None:
    values = np.arange(3 * FG_SAMPLES_PER_CASE, dtype=np.float32)
    sample = even_sample(values, FG_SAMPLES_PER_CASE)
    assert sample.size == FG_SAMPLES_PER_CASE
    assert sample[0] == values[0] and sample[-1] == values[-1]
    assert np.array_equal(sample, even_sample(values, FG_SAMPLES_PER_CASE))  # no random draw
    assert even_sample(values[:10], FG_SAMPLES_PER_CASE).size == 10


def test_bad_cases_are_refused(tmp_path: Path) -> None:
    images, label = make_case(tmp_path, "A", 0)
    with pytest.raises(DataError, match=r"2 images for channels \['c0'\]"):
        compute_fingerprint([images], [label], subjects=["A"], channels=["c0"])
    shifted = save_nifti(np.ones((20, 24, 18), np.uint8), AFFINE @ np.diag([2.0, 1, 1, 1]), tmp_path / "lab.nii.gz")
    with pytest.raises(GeometryError, match="label vs image"):
        compute_fingerprint([images], [str(shifted)], subjects=["A"], channels=["c0", "c1"])
    empty_images, empty_label = make_case(tmp_path, "E", 1, empty=True)
    with pytest.raises(DataError, match="none of the 1 training labels has a foreground voxel"):
        compute_fingerprint([empty_images], [empty_label], subjects=["E"], channels=["c0", "c1"])
