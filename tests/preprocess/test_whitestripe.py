"""Tests of medpipe.preprocess.whitestripe (WhiteStripe by intensity-normalization) and the normalise method.

The synthetic images are built so that the white stripe is known by hand whatever the library's kernel
density estimate puts the white-matter mode at (anywhere within the white-matter levels): the quantile
window (width 0.1 on either side of the mode) starts inside the block of the lowest white-matter level and
ends inside the block of the highest, so the stripe is exactly the three middle levels.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.config import allowed_values, normalise_settings, section_schema
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import save_nifti
from medpipe.preprocess.normalise import normalise_array, normalise_image
from medpipe.preprocess.whitestripe import CONTRASTS, fit_whitestripe

SHAPE, BRAIN = (24, 29, 24), (slice(2, 22), slice(2, 27), slice(2, 22))  # 20 x 25 x 20 = 10,000 brain voxels
#: Five white-matter levels around ``centre`` (52 % of the brain) and their voxel counts.
WM_OFFSETS, WM_COUNTS = (-2, -1, 0, 1, 2), (2000, 300, 600, 300, 2000)
#: The stripe by hand: the three middle levels; mean = centre, SD = sqrt((300 + 300) / 1200).
STRIPE_N, STRIPE_SD = 1200, float(np.sqrt(0.5))


def _phantom(classes: dict[float, int], seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Brain voxels with the given intensity counts in random places (background 0, outside the mask)."""
    values = np.concatenate([np.full(n, v, np.float32) for v, n in classes.items()])
    assert values.size == 10_000
    img = np.zeros(SHAPE, np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[BRAIN] = 1
    img[BRAIN] = np.random.default_rng(seed).permutation(values).reshape(20, 25, 20)
    return img, mask


def _t1() -> tuple[np.ndarray, np.ndarray]:
    """T1-like: CSF 30, GM 70, white matter (brightest) around 100."""
    return _phantom({30.0: 1300, 70.0: 3500, **{100.0 + d: n for d, n in zip(WM_OFFSETS, WM_COUNTS, strict=True)}})


def _t2() -> tuple[np.ndarray, np.ndarray]:
    """T2-like: white matter (darkest, the largest class) around 40, GM 70, CSF 150."""
    return _phantom({**{40.0 + d: n for d, n in zip(WM_OFFSETS, WM_COUNTS, strict=True)}, 70.0: 3500, 150.0: 1300})


def test_contrasts_are_the_schema_enum() -> None:
    assert sorted(CONTRASTS) == sorted(allowed_values("preprocess", "normalise", "whitestripe_contrast"))


def test_schema_defaults_and_per_sequence_whitestripe() -> None:
    props = section_schema("preprocess", "normalise")["properties"]
    assert props["whitestripe_width"]["default"] == 0.05  # Shinohara et al. 2014
    assert props["whitestripe_contrast"]["default"] == "T1"
    s = normalise_settings({}, "T1w")
    assert (s["method"], s["whitestripe_width"], s["whitestripe_contrast"]) == ("zscore", 0.05, "T1")
    settings = {"per_sequence": {"T1w": "whitestripe", "T2w": {"method": "whitestripe", "whitestripe_contrast": "T2"}}}
    t1, t2 = normalise_settings(settings, "T1w"), normalise_settings(settings, "T2w")
    assert (t1["method"], t1["whitestripe_contrast"], t1["whitestripe_width"]) == ("whitestripe", "T1", 0.05)
    assert (t2["method"], t2["whitestripe_contrast"], t2["whitestripe_width"]) == ("whitestripe", "T2", 0.05)
    assert normalise_settings(settings, "CT")["method"] == "zscore"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"whitestripe_contrast": "PD"}, r"preprocess\.normalise\.whitestripe_contrast: 'PD' is not one of"),
        ({"per_sequence": {"T2w": {"whitestripe_contrast": "t2"}}}, r"per_sequence\.T2w\.whitestripe_contrast"),
        ({"whitestripe_width": 0}, r"preprocess\.normalise\.whitestripe_width"),
        ({"per_sequence": {"T2w": {"whitestripe_width": 0.7}}}, r"per_sequence\.T2w\.whitestripe_width"),
    ],
)
def test_invalid_whitestripe_settings_name_the_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        normalise_settings(settings, "T2w")


@pytest.mark.parametrize(("make", "contrast", "centre"), [(_t1, "T1", 100.0), (_t2, "T2", 40.0), (_t2, "FLAIR", 40.0)])
def test_synthetic_stripe_is_the_hand_computed_one(make, contrast: str, centre: float) -> None:
    img, mask = make()
    s = normalise_settings({"method": "whitestripe", "whitestripe_width": 0.1, "whitestripe_contrast": contrast}, None)
    stripe = fit_whitestripe(img, mask, s)
    assert (stripe.low, stripe.high, stripe.n_voxels) == (centre - 1, centre + 1, STRIPE_N)
    assert stripe.mean == pytest.approx(centre, abs=1e-5)
    assert stripe.sd == pytest.approx(STRIPE_SD, rel=1e-6)
    assert stripe.fraction == pytest.approx(0.12)
    out = normalise_array(img, mask, s)
    expected = (img - centre) / STRIPE_SD  # the whole image, background included
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-5)
    inside = out[(mask > 0) & (np.abs(img - centre) <= 1)]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5


def test_wrong_contrast_or_too_narrow_stripe_is_a_data_error() -> None:
    img, mask = _t2()
    # T1 takes the brightest peak (CSF here, one intensity): no voxel lies strictly inside the window.
    with pytest.raises(DataError, match=r"subject S3.*t2\.nii\.gz.*WhiteStripe \(T1.*whitestripe_contrast"):
        fit_whitestripe(img, mask, normalise_settings({"method": "whitestripe"}, None), subject="S3", path="t2.nii.gz")
    img, mask = _t1()
    # Width 0.05 keeps one white-matter level only: SD 0.
    with pytest.raises(DataError, match=r"width 0\.05.*(S|s)tandard deviation.*zero.*whitestripe_width"):
        fit_whitestripe(img, mask, normalise_settings({"method": "whitestripe"}, None))


def test_a_stripe_spanning_zero_is_refused() -> None:
    img, mask = _t1()
    img[mask > 0] -= 100.0  # white matter around 0: the library would count the background (0) in the stripe
    s = normalise_settings({"method": "whitestripe", "whitestripe_width": 0.1}, None)
    with pytest.raises(DataError, match="spans intensity 0"):
        fit_whitestripe(img, mask, s)
    assert fit_whitestripe(img[mask > 0], None, s).mean == pytest.approx(0.0, abs=1e-5)  # brain voxels alone


def test_normalise_image_records_the_stripe_and_library(tmp_path: Path) -> None:
    img, mask = _t1()
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    save_nifti(img, affine, tmp_path / "t1.nii.gz")
    save_nifti(mask, affine, tmp_path / "mask.nii.gz")
    settings = {"method": "zscore", "per_sequence": {"T1w": {"method": "whitestripe", "whitestripe_width": 0.1}}}
    out = normalise_image(
        tmp_path / "t1.nii.gz",
        tmp_path / "mask.nii.gz",
        tmp_path / "n.nii.gz",
        tmp_path / "n_qc.png",
        subject="S1",
        settings=settings,
        target_spacing_mm=None,
        sequence="T1w",
    )
    data = np.asarray(nib.load(out).dataobj)
    s = normalise_settings(settings, "T1w")
    np.testing.assert_array_equal(data, normalise_array(img, mask, s))  # the image path = the array path
    side = json.loads((tmp_path / "n.json").read_text())
    p = side["parameters"]
    assert (p["method"], p["whitestripe_width"], p["whitestripe_contrast"]) == ("whitestripe", 0.1, "T1")
    ws = side["whitestripe"]
    assert ws["stripe_range"] == [99.0, 101.0] and ws["stripe_voxels"] == STRIPE_N
    assert ws["stripe_mean"] == pytest.approx(100.0, abs=1e-5)
    assert ws["stripe_sd"] == pytest.approx(STRIPE_SD, rel=1e-6)
    assert side["software"]["intensity-normalization"] == metadata.version("intensity-normalization") == "3.0.1"
    # Other methods: no whitestripe keys, record or library version in their sidecars (unchanged since 3.0.1).
    normalise_image(
        tmp_path / "t1.nii.gz",
        tmp_path / "mask.nii.gz",
        tmp_path / "z.nii.gz",
        tmp_path / "z_qc.png",
        subject="S1",
        settings=settings,
        target_spacing_mm=None,
        sequence="T2w",
    )
    z = json.loads((tmp_path / "z.json").read_text())
    assert z["parameters"]["method"] == "zscore" and not [k for k in z["parameters"] if "whitestripe" in k]
    assert "whitestripe" not in z and "intensity-normalization" not in z["software"]


@pytest.mark.shared
def test_colin27_white_matter_maps_to_zero_with_unit_spread(shared_dir: Path, tmp_path: Path) -> None:
    """Colin27 T1 (1 mm, full resolution) in its BET brain mask, cropped to the mask's bounding box."""
    head, brain = nib.load(shared_dir / "colin27/ch2.nii.gz"), nib.load(shared_dir / "colin27/ch2bet.nii.gz")
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(np.asarray(brain.dataobj) > 0))
    mask = (np.asarray(brain.dataobj)[box] > 0).astype(np.uint8)
    src = np.asarray(head.dataobj, dtype=np.float32)[box]
    save_nifti(src, head.slicer[box].affine, tmp_path / "t1.nii.gz")
    save_nifti(mask, head.slicer[box].affine, tmp_path / "mask.nii.gz")
    out = normalise_image(
        tmp_path / "t1.nii.gz",
        tmp_path / "mask.nii.gz",
        tmp_path / "n.nii.gz",
        tmp_path / "n_qc.png",
        subject="colin27",
        settings={"method": "whitestripe"},  # T1, width 0.05: the defaults
        target_spacing_mm=None,
    )
    normalised = np.asarray(nib.load(out).dataobj)
    ws = json.loads((tmp_path / "n.json").read_text())["whitestripe"]
    low, high = ws["stripe_range"]
    # Independently of the library: the brain voxels whose source intensity lies in the recorded range ...
    stripe = (mask > 0) & (src >= low) & (src <= high)
    after = normalised[stripe].astype(np.float64)
    # ... and the T1 white-matter peak: the histogram mode of the brain above its median intensity.
    inside = src[mask > 0].astype(np.int64)
    counts = np.bincount(inside)
    median = int(np.median(inside))
    mode = median + int(np.argmax(counts[median:]))
    print(
        f"Colin27 WhiteStripe (T1, width 0.05): stripe {low:g}..{high:g} (source units), stripe mean "
        f"{ws['stripe_mean']:.4f}, SD {ws['stripe_sd']:.4f}, {stripe.sum()} voxels "
        f"({ws['stripe_fraction_of_mask']:.1%} of the brain); histogram WM mode {mode}; after normalisation "
        f"stripe mean {after.mean():.2e}, SD {after.std():.6f}"
    )
    assert int(stripe.sum()) == ws["stripe_voxels"]
    assert abs(after.mean()) < 1e-4 and abs(after.std() - 1) < 1e-4
    assert low <= mode <= high and abs(ws["stripe_mean"] - mode) <= 2
    assert 0.05 <= ws["stripe_fraction_of_mask"] <= 0.1  # about 2 x width of the brain (strict thresholds)
