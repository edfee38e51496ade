"""Derived radiomics regions (medpipe.radiomics.regions): the peritumoral ring, its clipping and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medpipe.core.errors import ConfigError, DataError, GeometryError
from medpipe.radiomics.regions import body_mask, configured_regions, derive_region, ring_array

SPACING = (1.0, 1.5, 3.0)
AFFINE = np.diag([*SPACING, 1.0])


def _derive(mask: Path, image: Path, out: Path, definition: dict, *, subject: str, source: str, region: str) -> Path:
    return derive_region(mask, image, out, subject=subject, source=source, region=region, definition=definition)


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum(((grid[i] - centre[i]) * SPACING[i]) ** 2 for i in range(3))
    return (d2 <= radius_mm**2).astype(np.uint8)


def _maurer_ring(mask: np.ndarray, ring_mm: float) -> np.ndarray:
    """The ring by an independent distance transform (SimpleITK's signed Maurer map, image spacing)."""
    img = sitk.GetImageFromArray(mask.transpose(2, 1, 0).copy())
    img.SetSpacing(SPACING)
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    d = sitk.GetArrayFromImage(dist).transpose(2, 1, 0)
    return (d > 0) & (d <= ring_mm + 1e-6)


def test_ring_is_outside_the_mask_within_the_distance_and_matches_an_independent_transform() -> None:
    mask = _ball((40, 30, 16), (20, 15, 8), 8.0)
    ring = ring_array(mask, SPACING, 5.0)
    assert not (ring & (mask > 0)).any()
    assert ring.sum() == _maurer_ring(mask, 5.0).sum()
    np.testing.assert_array_equal(ring, _maurer_ring(mask, 5.0))
    # a voxel 4.5 mm (three 1.5 mm steps) from the edge along axis 1 is in, one 6 mm (two 3 mm steps) along axis 2 out
    edge_j = int(np.nonzero(mask[20, :, 8])[0].max())
    assert ring[20, edge_j + 3, 8] and not ring[20, edge_j + 4, 8]
    edge_k = int(np.nonzero(mask[20, 15, :])[0].max())
    assert ring[20, 15, edge_k + 1] and not ring[20, 15, edge_k + 2]


def test_ring_is_clipped_at_the_image_border_and_to_the_body(tmp_path: Path) -> None:
    shape = (30, 30, 10)
    image = np.zeros(shape, np.float32)
    image[:, :18, :] = 100.0  # the body ends at j = 17; air beyond
    image += np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[12:18, 12:18, 0:4] = 1  # touching the bottom border (k = 0) and near the body's edge
    nib.save(nib.Nifti1Image(image, AFFINE), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    outs = {}
    for clip in ("image", "body"):
        out = tmp_path / f"ring_{clip}.nii.gz"
        _derive(
            tmp_path / "mask.nii.gz",
            tmp_path / "image.nii.gz",
            out,
            {"ring_mm": 6.0, "clip": clip},
            subject="S1",
            source="human",
            region="ring6",
        )
        outs[clip] = np.asarray(nib.load(out).dataobj)
        assert nib.load(out).get_data_dtype() == np.uint8
        np.testing.assert_allclose(nib.load(out).affine, AFFINE)
    np.testing.assert_array_equal(outs["image"], ring_array(mask, SPACING, 6.0))
    assert outs["body"].sum() < outs["image"].sum()
    assert not outs["body"][:, 18:, :].any() and outs["image"][:, 18:, :].any()
    np.testing.assert_array_equal(outs["body"], outs["image"] & (np.arange(30) < 18)[None, :, None])
    record = json.loads((tmp_path / "ring_body.json").read_text())
    assert record["n_voxels"] == int(outs["body"].sum())
    assert record["n_voxels_outside_body"] == int(outs["image"].sum() - outs["body"].sum())
    assert record["volume_mm3"] == pytest.approx(outs["body"].sum() * np.prod(SPACING))
    assert record["parameters"]["ring_mm"] == 6.0 and record["parameters"]["clip"] == "body"


def test_body_mask_fills_holes_and_keeps_the_largest_component() -> None:
    image = np.zeros((20, 20, 6), np.float32)
    image[2:14, 2:14, :] = 50.0
    image[6:9, 6:9, :] = 0.0  # a dark hole inside the body (e.g. a cyst)
    image[17:19, 17:19, :] = 50.0  # a separate bright blob (the table, a marker)
    body = body_mask(image)
    assert body[7, 7, 3] and body[2, 2, 0] and not body[18, 18, 3] and not body[15, 15, 3]


def test_empty_ring_and_empty_mask_are_refused_naming_subject_and_region(tmp_path: Path) -> None:
    shape = (8, 8, 4)
    image = np.full(shape, 10.0, np.float32)
    nib.save(nib.Nifti1Image(image, AFFINE), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE), tmp_path / "full.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), AFFINE), tmp_path / "empty.nii.gz")
    definition = {"ring_mm": 5.0, "clip": "image"}
    with pytest.raises(DataError, match=r"region ring5 .*empty.*S9|S9.*region ring5 .*empty"):
        _derive(
            tmp_path / "full.nii.gz",
            tmp_path / "image.nii.gz",
            tmp_path / "r.nii.gz",
            definition,
            subject="S9",
            source="human",
            region="ring5",
        )
    with pytest.raises(DataError, match="mask is empty") as err:
        _derive(
            tmp_path / "empty.nii.gz",
            tmp_path / "image.nii.gz",
            tmp_path / "r.nii.gz",
            definition,
            subject="S9",
            source="human",
            region="ring5",
        )
    assert "S9" in str(err.value) and "empty.nii.gz" in str(err.value)
    # an empty automatic mask (a model that found nothing) gives an empty ring, as its features table has no rows
    out = _derive(
        tmp_path / "empty.nii.gz",
        tmp_path / "image.nii.gz",
        tmp_path / "auto_ring.nii.gz",
        definition,
        subject="S9",
        source="auto",
        region="ring5",
    )
    assert not np.asarray(nib.load(out).dataobj).any()


def test_image_on_another_grid_is_refused(tmp_path: Path) -> None:
    mask = np.zeros((8, 8, 4), np.uint8)
    mask[3:5, 3:5, 1:3] = 1
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "mask.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8, 5), np.float32), AFFINE), tmp_path / "image.nii.gz")
    with pytest.raises(GeometryError, match="S2"):
        _derive(
            tmp_path / "mask.nii.gz",
            tmp_path / "image.nii.gz",
            tmp_path / "r.nii.gz",
            {"ring_mm": 5.0, "clip": "image"},
            subject="S2",
            source="human",
            region="ring5",
        )


def test_configured_regions_refuse_the_structure_name() -> None:
    config = {"label": {"name": "GTV"}, "radiomics": {"regions": {"ring10": {"ring_mm": 10, "clip": "body"}}}}
    assert configured_regions(config) == {"ring10": {"ring_mm": 10, "clip": "body"}}
    config["radiomics"]["regions"]["GTV"] = {"ring_mm": 5, "clip": "image"}
    with pytest.raises(ConfigError, match=r"'GTV' is label\.name"):
        configured_regions(config)


def test_body_of_a_t1_limb_keeps_muscle_and_tumour_and_leaves_out_air() -> None:
    """T1 MR of a limb: air, muscle (and a muscle-like tumour), bright fat. The body is all tissue, not only fat
    (a two-class Otsu threshold falls between muscle and fat and would leave the tumour outside the body)."""
    rng = np.random.default_rng(4)
    shape = (48, 48, 12)
    i, j = np.indices(shape[:2])
    r = np.hypot(i - 24, j - 24)[..., None].repeat(shape[2], axis=2)
    image = np.where(r < 20, 1000.0, 5.0)  # fat ring under the skin
    image[r < 16] = 300.0  # muscle
    tumour = (np.hypot(i - 24, j - 20)[..., None] < 5).repeat(shape[2], axis=2)
    image[tumour] = 330.0
    image = (image + rng.normal(0, 10, shape)).astype(np.float32)
    body = body_mask(image, tumour)
    assert body[r < 19].mean() > 0.999 and body[tumour].all() and not body[r > 22].any()
    two_class = sitk.OtsuThresholdImageFilter()
    two_class.SetInsideValue(0)
    two_class.SetOutsideValue(1)
    two_class.Execute(sitk.GetImageFromArray(image))
    assert two_class.GetThreshold() > 330.0  # the plain Otsu split: fat vs everything else
    ring = ring_array(tumour, SPACING, 20.0, within=body)
    assert ring.any() and not ring[r > 21].any()


def test_regions_of_classes_and_rings_around_a_class(tmp_path: Path) -> None:
    """With label.classes: a region made of classes is their union; with ring_mm, the ring around them only."""
    shape = (30, 30, 12)
    labels = np.zeros(shape, np.uint8)
    labels[8:20, 8:20, 3:9] = 1  # rim
    labels[11:17, 11:17, 5:7] = 2  # core inside it
    nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "mask.nii.gz")
    nib.save(nib.Nifti1Image(np.full(shape, 50.0, np.float32), AFFINE), tmp_path / "image.nii.gz")
    config = {
        "label": {"name": "lesion", "classes": {"rim": {"value": 1}, "core": {"value": 2}}},
        "radiomics": {
            "regions": {
                "core": {"classes": ["core"], "clip": "image"},
                "corering": {"classes": ["core"], "ring_mm": 3.0, "clip": "image"},
            }
        },
    }
    regions = configured_regions(config)
    assert regions["core"]["values"] == [2] and regions["corering"]["values"] == [2]
    out = {}
    for name, definition in regions.items():
        path = _derive(
            tmp_path / "mask.nii.gz",
            tmp_path / "image.nii.gz",
            tmp_path / f"{name}.nii.gz",
            definition,
            subject="S1",
            source="human",
            region=name,
        )
        out[name] = np.asarray(nib.load(path).dataobj) > 0
    np.testing.assert_array_equal(out["core"], labels == 2)
    np.testing.assert_array_equal(out["corering"], ring_array(labels == 2, SPACING, 3.0))
    assert not (out["corering"] & (labels == 2)).any() and (out["corering"] & (labels == 1)).any()
    nib.save(nib.Nifti1Image((labels == 1).astype(np.uint8), AFFINE), tmp_path / "nocore.nii.gz")
    with pytest.raises(DataError, match=r"holds none of the classes \['core'\] \(values \[2\]\): no region core"):
        _derive(
            tmp_path / "nocore.nii.gz",
            tmp_path / "image.nii.gz",
            tmp_path / "x.nii.gz",
            regions["core"],
            subject="S1",
            source="human",
            region="core",
        )
    config["radiomics"]["regions"]["bad"] = {"classes": ["edema"]}
    with pytest.raises(ConfigError, match=r"regions\.bad\.classes: \['edema'\] are not classes"):
        configured_regions(config)
