"""Tests of medpipe.evaluate.metrics: analytic spheres, empty masks, a second implementation, real STS masks.

Stated tolerances for voxelised spheres (radius >= 10 mm, voxels up to 0.5 x 0.5 x 2.5 mm):
Dice and Jaccard within 0.005 of the analytic lens volumes; Hausdorff and HD95 within the largest
voxel spacing; mean symmetric surface distance within half the largest voxel spacing. The surfaces
are voxel centres of boundary voxels, so the distances carry up to about one voxel of
discretisation error; the overlap metrics converge much faster.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from medpipe.core.errors import DataError, GeometryError
from medpipe.core.io import save_nifti
from medpipe.evaluate.metrics import (
    METRICS,
    bootstrap_ci,
    evaluate_pair,
    pair_metrics,
    rank_cases,
    read_metrics,
    summarise,
)

# --- analytic reference -------------------------------------------------------------------------


def analytic_spheres(r1: float, r2: float, d: float) -> dict[str, float]:
    """Exact metrics of two spheres (radii r1, r2, centres d apart).

    Overlap from the lens volume; distances from the distance of a point of one sphere to the
    other sphere's surface, |sqrt(r1^2 + d^2 - 2 r1 d u) - r2| with u = cos(theta) uniform in
    [-1, 1] for area-uniform points; the mean pools both surfaces weighted by their areas.
    """
    u = np.linspace(-1.0, 1.0, 400001)
    f_ab = np.abs(np.sqrt(r1**2 + d**2 - 2 * r1 * d * u) - r2)
    f_ba = np.abs(np.sqrt(r2**2 + d**2 - 2 * r2 * d * u) - r1)
    if d <= abs(r1 - r2):
        inter = 4 / 3 * math.pi * min(r1, r2) ** 3
    elif d >= r1 + r2:
        inter = 0.0
    else:
        inter = (
            math.pi
            * (r1 + r2 - d) ** 2
            * (d * d + 2 * d * r2 - 3 * r2 * r2 + 2 * d * r1 + 6 * r1 * r2 - 3 * r1 * r1)
            / (12 * d)
        )
    va, vb = 4 / 3 * math.pi * r1**3, 4 / 3 * math.pi * r2**3
    return {
        "dice": 2 * inter / (va + vb),
        "jaccard": inter / (va + vb - inter),
        "hausdorff_mm": float(max(f_ab.max(), f_ba.max())),
        "hd95_mm": float(max(np.percentile(f_ab, 95), np.percentile(f_ba, 95))),
        "msd_mm": float((r1**2 * f_ab.mean() + r2**2 * f_ba.mean()) / (r1**2 + r2**2)),
    }


def spheres(spacing, c1, r1, c2, r2, extent=70.0):
    shape = tuple(int(extent / s) for s in spacing)
    x, y, z = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    a = (x - c1[0]) ** 2 + (y - c1[1]) ** 2 + (z - c1[2]) ** 2 <= r1 * r1
    b = (x - c2[0]) ** 2 + (y - c2[1]) ** 2 + (z - c2[2]) ** 2 <= r2 * r2
    return a, b


CENTRE = np.array([35.3, 35.1, 34.8])
CASES = [  # (r1, r2, offset vector in mm)
    (12.0, 17.0, (0.0, 0.0, 0.0)),
    (15.0, 15.0, (4.0, 0.0, 0.0)),
    (15.0, 15.0, (0.0, 0.0, 5.0)),
    (10.0, 14.0, (2.0, 2.0, 1.0)),
    (12.0, 12.0, (3.0, -3.0, 4.0)),
]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.6, 0.8, 1.5), (0.5, 0.5, 2.5)])
@pytest.mark.parametrize(("r1", "r2", "offset"), CASES)
def test_spheres_match_analytic_values(spacing, r1, r2, offset):
    off = np.asarray(offset)
    a, b = spheres(spacing, CENTRE, r1, CENTRE + off, r2)
    got = pair_metrics(a, b, spacing)
    want = analytic_spheres(r1, r2, float(np.linalg.norm(off)))
    h = max(spacing)
    assert got["dice"] == pytest.approx(want["dice"], abs=0.005)
    assert got["jaccard"] == pytest.approx(want["jaccard"], abs=0.005)
    assert got["hausdorff_mm"] == pytest.approx(want["hausdorff_mm"], abs=h)
    assert got["hd95_mm"] == pytest.approx(want["hd95_mm"], abs=h)
    assert got["msd_mm"] == pytest.approx(want["msd_mm"], abs=h / 2)
    assert got["empty_mask"] == "none"
    voxel_ml = np.prod(spacing) / 1000
    assert got["volume_auto_ml"] == pytest.approx(a.sum() * voxel_ml)
    assert got["rel_volume_diff"] == pytest.approx((a.sum() - b.sum()) / b.sum())


def test_identical_masks_dice_one_distance_zero():
    a, _ = spheres((0.7, 0.7, 3.0), CENTRE, 11.0, CENTRE, 11.0)
    got = pair_metrics(a, a.copy(), (0.7, 0.7, 3.0))
    assert got["dice"] == 1.0 and got["jaccard"] == 1.0
    assert got["precision"] == 1.0 and got["recall"] == 1.0
    assert got["hausdorff_mm"] == 0.0 and got["hd95_mm"] == 0.0 and got["msd_mm"] == 0.0
    assert got["rel_volume_diff"] == 0.0


def test_nested_masks_precision_recall():
    a, b = spheres((1.0, 1.0, 1.0), CENTRE, 8.0, CENTRE, 12.0)  # a inside b
    got = pair_metrics(a, b, (1.0, 1.0, 1.0))
    assert got["precision"] == 1.0
    assert got["recall"] == pytest.approx(a.sum() / b.sum())


# --- empty masks -------------------------------------------------------------------------------


def test_empty_masks_have_documented_values():
    spacing = (1.0, 1.0, 2.0)
    full, _ = spheres(spacing, CENTRE, 10.0, CENTRE, 10.0)
    empty = np.zeros_like(full)
    both = pair_metrics(empty, empty, spacing)
    assert both["empty_mask"] == "both"
    assert (both["dice"], both["jaccard"], both["precision"], both["recall"]) == (1.0, 1.0, 1.0, 1.0)
    assert (both["hausdorff_mm"], both["hd95_mm"], both["msd_mm"], both["rel_volume_diff"]) == (0, 0, 0, 0)

    no_pred = pair_metrics(empty, full, spacing)
    assert no_pred["empty_mask"] == "auto"
    assert (no_pred["dice"], no_pred["jaccard"], no_pred["precision"], no_pred["recall"]) == (0, 0, 0, 0)
    assert no_pred["rel_volume_diff"] == -1.0
    assert all(math.isnan(no_pred[k]) for k in ("hausdorff_mm", "hd95_mm", "msd_mm"))

    no_gt = pair_metrics(full, empty, spacing)
    assert no_gt["empty_mask"] == "human"
    assert (no_gt["dice"], no_gt["precision"], no_gt["recall"]) == (0, 0, 0)
    assert math.isnan(no_gt["rel_volume_diff"]) and math.isnan(no_gt["hd95_mm"])
    assert no_gt["volume_human_ml"] == 0.0 and no_gt["volume_auto_ml"] > 0


# --- second, independent implementation (SimpleITK + KD-tree) ------------------------------------


def reference_metrics(a: np.ndarray, b: np.ndarray, spacing) -> dict[str, float]:
    """Metrics by SimpleITK (overlap filter, label contours) and exact nearest neighbours (cKDTree)."""

    def to_sitk(m):
        img = sitk.GetImageFromArray(np.ascontiguousarray(m.astype(np.uint8).transpose(2, 1, 0)))
        img.SetSpacing([float(s) for s in spacing])
        return img

    sa, sb = to_sitk(a), to_sitk(b)
    ov = sitk.LabelOverlapMeasuresImageFilter()
    ov.Execute(sa, sb)  # source = auto, target = human
    shape_a, shape_b = sitk.LabelShapeStatisticsImageFilter(), sitk.LabelShapeStatisticsImageFilter()
    shape_a.Execute(sa)
    shape_b.Execute(sb)
    # 1 - |T \ S| / |T|; ITK's false positive error is a rate over T's background, not 1 - precision
    recall = 1.0 - ov.GetFalseNegativeError()

    def surface_points(img):
        contour = sitk.LabelContour(img, fullyConnected=False, backgroundValue=0)
        idx = np.argwhere(sitk.GetArrayFromImage(contour).transpose(2, 1, 0) > 0)
        return idx * np.asarray(spacing)

    pa, pb = surface_points(sa), surface_points(sb)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    return {
        "dice": ov.GetDiceCoefficient(),
        "jaccard": ov.GetJaccardCoefficient(),
        "precision": recall * shape_b.GetNumberOfPixels(1) / shape_a.GetNumberOfPixels(1),
        "recall": recall,
        "volume_auto_ml": shape_a.GetPhysicalSize(1) / 1000.0,
        "volume_human_ml": shape_b.GetPhysicalSize(1) / 1000.0,
        "hausdorff_mm": float(max(d_ab.max(), d_ba.max())),
        "hd95_mm": float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))),
        "msd_mm": float(np.concatenate([d_ab, d_ba]).mean()),
    }


@pytest.mark.shared
@pytest.mark.parametrize("patient", ["STS_001", "STS_012"])
def test_real_sts_masks_agree_with_second_implementation(shared_dir, patient):
    img = nib.load(shared_dir / "ibsi_sts" / "nifti" / patient / "MR_T1_mask.nii.gz")
    human = np.asarray(img.dataobj) > 0
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    diagonal = float(np.linalg.norm(spacing))
    eroded = ndimage.binary_erosion(human)
    shifted = np.roll(human, (3, -2, 1), axis=(0, 1, 2))
    for auto in (eroded, shifted):
        got = pair_metrics(auto, human, spacing)
        ref = reference_metrics(auto, human, spacing)
        for key in ("dice", "jaccard", "precision", "recall", "volume_auto_ml", "volume_human_ml"):
            assert got[key] == pytest.approx(ref[key], abs=1e-6), key
        for key in ("hausdorff_mm", "hd95_mm", "msd_mm"):
            assert abs(got[key] - ref[key]) <= diagonal, key
            assert got[key] == pytest.approx(ref[key], abs=1e-3), key  # same surface definition
    shift_mm = float(np.linalg.norm(np.multiply((3, 2, 1), spacing)))
    assert pair_metrics(shifted, human, spacing)["hausdorff_mm"] >= shift_mm - 1e-4


# --- per-subject TSV and summary ----------------------------------------------------------------


def _write_pair(tmp_path: Path, name: str, offset: int, affine=None):
    spacing = (0.9, 0.9, 2.0)
    aff = np.diag([*spacing, 1.0]) if affine is None else affine
    a, b = spheres(spacing, CENTRE, 9.0, CENTRE + np.array([offset, 0, 0]), 9.0, extent=50)
    auto = save_nifti(a.astype(np.uint8), aff, tmp_path / f"{name}_auto.nii.gz")
    human = save_nifti(b.astype(np.uint8), np.diag([*spacing, 1.0]), tmp_path / f"{name}_human.nii.gz")
    return auto, human


def test_evaluate_pair_writes_table_and_checks_grid(tmp_path):
    auto, human = _write_pair(tmp_path, "s1", 2)
    out = evaluate_pair(auto, human, tmp_path / "m.tsv", subject="s1", labels={"lesion": 1})
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["subject", "label", "label_value", *METRICS, "empty_mask"]
    assert table.loc[0, "subject"] == "s1" and table.loc[0, "empty_mask"] == "none"
    assert 0.7 < table.loc[0, "dice"] < 1.0
    shifted = np.diag([0.9, 0.9, 2.0, 1.0])
    shifted[0, 3] = 5.0
    bad_auto, _ = _write_pair(tmp_path, "s2", 0, affine=shifted)
    with pytest.raises(GeometryError, match="s2"):
        evaluate_pair(bad_auto, human, tmp_path / "bad.tsv", subject="s2", labels={"lesion": 1})


def test_a_region_scores_the_union_of_its_classes(tmp_path):
    spacing = (1.0, 1.0, 1.0)
    human = np.zeros((20, 20, 20), np.uint8)
    human[4:16, 4:16, 4:16] = 1  # rim
    human[7:13, 7:13, 7:13] = 2  # core
    auto = human.copy()
    auto[7:13, 7:13, 7:10] = 1  # half the core called rim: the classes disagree, their union does not
    paths = [save_nifti(m, np.eye(4), tmp_path / f"{n}.nii.gz") for n, m in (("auto", auto), ("human", human))]
    labels = {"rim": [1], "core": [2], "lesion": [1, 2]}
    table = read_metrics(evaluate_pair(*paths, tmp_path / "m.tsv", subject="s1", labels=labels))
    rows = table.set_index("label")
    assert list(rows.index) == ["rim", "core", "lesion"]
    assert rows.loc["lesion", "label_value"] == "1+2" and str(rows.loc["rim", "label_value"]) == "1"
    assert rows.loc["lesion", "dice"] == 1.0 and rows.loc["lesion", "hd95_mm"] == 0.0
    assert rows.loc["core", "dice"] == pytest.approx(2 * 108 / (108 + 216))
    assert rows.loc["rim", "dice"] == pytest.approx(2 * 1512 / (1620 + 1512))
    assert rows.loc["lesion", "volume_human_ml"] == pytest.approx(12**3 / 1000)
    assert pair_metrics(auto == 2, human == 2, spacing)["dice"] == pytest.approx(rows.loc["core", "dice"])


def test_summarise_statistics_and_figures(tmp_path):
    tables, qc = [], {}
    for k, off in enumerate([0, 1, 2, 3, 5]):
        auto, human = _write_pair(tmp_path, f"s{k}", off)
        tables.append(evaluate_pair(auto, human, tmp_path / f"s{k}.tsv", subject=f"00{k}", labels={"lesion": 1}))
        qc[f"00{k}"] = _tiny_png(tmp_path / f"sub-00{k}_qc.png", k)
    out = summarise(
        tables,
        tmp_path / "metrics.tsv",
        tmp_path / "summary.tsv",
        tmp_path / "box.png",
        seed=3,
        qc_images=list(qc.values()),
        out_cases=tmp_path / "cases.png",
    )
    metrics = read_metrics(tmp_path / "metrics.tsv")
    summary = pd.read_csv(out, sep="\t").set_index("metric")
    dice = metrics["dice"].to_numpy()
    assert summary.loc["dice", "n"] == 5
    assert summary.loc["dice", "mean"] == pytest.approx(dice.mean())
    assert summary.loc["dice", "sd"] == pytest.approx(dice.std(ddof=1))
    assert summary.loc["dice", "median"] == pytest.approx(np.median(dice))
    assert summary.loc["dice", "ci95_low"] <= dice.mean() <= summary.loc["dice", "ci95_high"]
    assert rank_cases(metrics) == {"best": "000", "median": "002", "worst": "004"}
    assert metrics["subject"].tolist() == ["000", "001", "002", "003", "004"]  # IDs stay strings
    assert (tmp_path / "box.png").stat().st_size > 1000 and (tmp_path / "cases.png").stat().st_size > 1000
    first = (tmp_path / "summary.tsv").read_bytes()
    summarise(tables, tmp_path / "metrics.tsv", tmp_path / "summary.tsv", tmp_path / "box2.png", seed=3)
    assert (tmp_path / "summary.tsv").read_bytes() == first  # seeded: byte-identical
    assert (tmp_path / "box.png").read_bytes() == (tmp_path / "box2.png").read_bytes()


def test_summary_per_set_and_site_side_by_side(tmp_path):
    tables = []
    for k, off in enumerate([0, 1, 0, 4, 5, 6]):
        auto, human = _write_pair(tmp_path, f"s{k}", off)
        tables.append(evaluate_pair(auto, human, tmp_path / f"s{k}.tsv", subject=f"00{k}", labels={"lesion": 1}))
    subjects = [f"00{k}" for k in range(6)]
    sets = dict(zip(subjects, ["train", "train", "train", "external", "external", "test"], strict=True))
    sites = dict(zip(subjects, ["A", "A", "B", "C", "C", "A"], strict=True))
    summarise(
        tables,
        tmp_path / "metrics.tsv",
        tmp_path / "summary.tsv",
        tmp_path / "box.png",
        seed=3,
        sets=sets,
        sites=sites,
        out_by_site=tmp_path / "by_site.tsv",
    )
    metrics = read_metrics(tmp_path / "metrics.tsv")
    assert list(metrics.columns[:3]) == ["subject", "set", "site"]
    assert dict(zip(metrics["subject"], metrics["set"], strict=True)) == sets
    summary = read_metrics(tmp_path / "summary.tsv")
    dice = summary[summary["metric"] == "dice"].set_index("set")
    assert list(dice.index) == ["train", "test", "external"]  # cross-validation first, external last
    for name in ("train", "test", "external"):
        expected = metrics.loc[metrics["set"] == name, "dice"]
        assert dice.loc[name, "n"] == len(expected)
        assert dice.loc[name, "mean"] == pytest.approx(expected.mean())
    assert dice.loc["train", "mean"] > dice.loc["external", "mean"]  # shifted masks score lower
    by_site = read_metrics(tmp_path / "by_site.tsv")
    by_site = by_site[by_site["metric"] == "dice"].set_index(["set", "site"])["n"].to_dict()
    assert by_site == {("train", "A"): 2, ("train", "B"): 1, ("test", "A"): 1, ("external", "C"): 2}
    with pytest.raises(DataError, match=r"no set given for subject\(s\) \['005'\]"):
        summarise(
            tables,
            tmp_path / "m.tsv",
            tmp_path / "s.tsv",
            tmp_path / "b.png",
            seed=3,
            sets=dict(list(sets.items())[:5]),
        )
    with pytest.raises(DataError, match="unknown set"):
        summarise(
            tables, tmp_path / "m.tsv", tmp_path / "s.tsv", tmp_path / "b.png", seed=3, sets={**sets, "005": "val"}
        )


def _tiny_png(path: Path, k: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, np.full((8, 8), k, dtype=float), vmin=0, vmax=5)
    return path


def test_bootstrap_ci_covers_mean_and_is_seeded():
    v = np.random.default_rng(0).normal(0.8, 0.05, 30)
    lo, hi = bootstrap_ci(v, seed=1)
    assert lo < v.mean() < hi
    assert (lo, hi) == bootstrap_ci(v, seed=1)
    assert hi - lo == pytest.approx(2 * 1.96 * v.std(ddof=1) / np.sqrt(v.size), rel=0.2)
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([0.5]), seed=1))


def test_empty_cases_in_tables_and_summary(tmp_path):
    spacing = (1.0, 1.0, 2.0)
    aff = np.diag([*spacing, 1.0])
    full, _ = spheres(spacing, CENTRE, 8.0, CENTRE, 8.0, extent=40)
    empty = np.zeros_like(full)
    cases = {"001": (full, full), "002": (empty, full), "003": (full, empty), "004": (empty, empty)}
    tables = []
    for subject, (a, h) in cases.items():
        pa = save_nifti(a.astype(np.uint8), aff, tmp_path / f"{subject}_a.nii.gz")
        ph = save_nifti(h.astype(np.uint8), aff, tmp_path / f"{subject}_h.nii.gz")
        tables.append(evaluate_pair(pa, ph, tmp_path / f"{subject}.tsv", subject=subject, labels={"lesion": 1}))
    assert "\tNaN\t" in (tmp_path / "002.tsv").read_text()  # undefined distances written explicitly
    summarise(tables, tmp_path / "m.tsv", tmp_path / "s.tsv", tmp_path / "b.png", seed=0)
    metrics = read_metrics(tmp_path / "m.tsv").set_index("subject")
    assert metrics["empty_mask"].to_dict() == {"001": "none", "002": "auto", "003": "human", "004": "both"}
    assert metrics["dice"].to_dict() == {"001": 1.0, "002": 0.0, "003": 0.0, "004": 1.0}
    summary = pd.read_csv(tmp_path / "s.tsv", sep="\t").set_index("metric")
    assert summary.loc["hd95_mm", "n"] == 2 and summary.loc["hd95_mm", "n_missing"] == 2
    assert summary.loc["dice", "n"] == 4 and summary.loc["dice", "mean"] == 0.5
