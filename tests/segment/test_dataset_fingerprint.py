"""Dataset fingerprint for planning: geometry, crop, class statistics, intensities, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medpipe.core.errors import DataError
from medpipe.core.io import save_nifti
from medpipe.segment.dataset_fingerprint import (
    DatasetFingerprint,
    compute_dataset_fingerprint,
    crop_box,
    elongation,
)


def write_subject(
    root: Path,
    subject: str,
    label: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    channels: int = 1,
    body: tuple[slice, ...] | None = None,
    seed: int = 0,
) -> tuple[list[str], str]:
    """Images that are zero outside ``body`` (noise + 2 x label inside), and the label."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    inside = np.zeros(label.shape, dtype=bool)
    inside[body or tuple(slice(None) for _ in range(3))] = True
    images = []
    for c in range(channels):
        data = np.where(inside, 10.0 * (c + 1) + rng.normal(0.0, 1.0, label.shape) + 20.0 * (label > 0), 0.0)
        images.append(str(save_nifti(data.astype(np.float32), affine, root / f"{subject}_ch{c}.nii.gz")))
    return images, str(save_nifti(label.astype(np.uint8), affine, root / f"{subject}_label.nii.gz"))


def two_blobs(shape: tuple[int, int, int] = (30, 32, 20)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[5:9, 5:9, 5:9] = 1  # 64 voxels
    label[20:23, 20:23, 10:13] = 1  # 27 voxels, not touching
    label[12:14, 12:14, 12:14] = 2  # 8 voxels
    return label


def test_fingerprint_records_geometry_crop_classes_and_intensities(tmp_path: Path) -> None:
    body = (slice(2, 28), slice(1, 31), slice(3, 18))  # 26 x 30 x 15
    images, label = write_subject(tmp_path, "A", two_blobs(), spacing=(0.8, 0.9, 2.5), channels=2, body=body)
    fp = compute_dataset_fingerprint(
        [images], [label], subjects=["A"], channels=["T1w", "CT1"], modalities=["MR", "CT"]
    )
    (s,) = fp.subjects
    assert s.spacing_mm == pytest.approx((0.8, 0.9, 2.5))
    assert s.shape == (30, 32, 20)
    assert s.shape_after_crop == (26, 30, 15)
    assert fp.n_classes == 3
    assert s.class_voxels == (91, 8)
    assert s.class_share == pytest.approx((91 / (26 * 30 * 15), 8 / (26 * 30 * 15)), abs=1e-6)
    assert s.class_components == (2, 1)
    assert fp.channels == ("T1w", "CT1") and fp.modalities == ("MR", "CT")
    # foreground (label > 0) voxels: 10 (20) + 20 + noise per channel
    assert [c.mean for c in fp.intensities] == pytest.approx([30.0, 40.0], abs=0.5)
    assert [c.n_voxels for c in fp.intensities] == [99, 99]
    assert fp.intensities[0].percentile_00_5 < fp.intensities[0].mean < fp.intensities[0].percentile_99_5


def test_fingerprint_json_round_trip_and_is_deterministic(tmp_path: Path) -> None:
    made = [write_subject(tmp_path, s, two_blobs(), seed=i) for i, s in enumerate(["A", "B"])]
    kwargs = {"subjects": ["A", "B"], "channels": ["T1w"], "modalities": ["MR"]}
    fp = compute_dataset_fingerprint([m[0] for m in made], [m[1] for m in made], **kwargs)
    again = compute_dataset_fingerprint([m[0] for m in made], [m[1] for m in made], **kwargs)
    text = json.dumps(fp.to_json(), sort_keys=True)
    assert text == json.dumps(again.to_json(), sort_keys=True)
    assert DatasetFingerprint.from_json(json.loads(text)) == fp
    with pytest.raises(DataError, match="not a dataset fingerprint"):
        DatasetFingerprint.from_json({**fp.to_json(), "format": "other"})


def test_channel_count_mismatch_names_the_subject(tmp_path: Path) -> None:
    a = write_subject(tmp_path, "A", two_blobs(), channels=2)
    b = write_subject(tmp_path, "B", two_blobs(), channels=1)
    with pytest.raises(DataError, match=r"\[subject B.*1 images, but the channels are \['T1w', 'T2w'\] \(2\)"):
        compute_dataset_fingerprint(
            [a[0], b[0]], [a[1], b[1]], subjects=["A", "B"], channels=["T1w", "T2w"], modalities=["MR", "MR"]
        )


def test_refuses_labels_without_foreground_and_blank_images(tmp_path: Path) -> None:
    empty = write_subject(tmp_path, "E", np.zeros((10, 10, 10), dtype=np.uint8))
    with pytest.raises(DataError, match="none of the 1 training labels has a foreground voxel"):
        compute_dataset_fingerprint([empty[0]], [empty[1]], subjects=["E"], channels=["T1w"], modalities=["MR"])
    blank = write_subject(tmp_path, "Z", two_blobs(), body=(slice(0, 0), slice(None), slice(None)))
    with pytest.raises(DataError, match=r"\[subject Z.*zero everywhere"):
        compute_dataset_fingerprint([blank[0]], [blank[1]], subjects=["Z"], channels=["T1w"], modalities=["MR"])


def test_crop_box_is_the_nonzero_bounding_box_of_any_channel() -> None:
    data = np.zeros((2, 10, 12, 14))
    data[0, 2, 3, 4] = 1.0
    data[1, 7, 9, 5] = -3.0
    assert crop_box(data) == (slice(2, 8), slice(3, 10), slice(4, 6))
    assert crop_box(np.zeros((1, 4, 4, 4))) == ()


def test_elongation_tells_a_line_from_a_ball() -> None:
    grid = np.indices((40, 40, 40))
    ball = ((grid - 20) ** 2).sum(axis=0) < 8**2
    line = np.zeros((40, 40, 40), dtype=bool)
    line[2:38, 19:21, 19:21] = True
    assert elongation(ball, (1.0, 1.0, 1.0)) == pytest.approx(1.0, abs=0.05)
    stretched = elongation(line, (1.0, 1.0, 1.0))
    assert stretched is not None and stretched > 10
    assert elongation(np.zeros((4, 4, 4), dtype=bool), (1.0, 1.0, 1.0)) is None
