"""nnU-Net's CT normalisation fitted per fold: statistics of the fold's training foreground, stored, applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from medpipe.core.errors import DataError
from medpipe.core.io import save_nifti
from medpipe.segment.infer import predict_case
from medpipe.segment.intensity import ForegroundNormalisation, apply_to_stack
from medpipe.segment.model import load_model
from medpipe.segment.train import train_fold

from .conftest import make_case


def _hu_case(root: Path, subject: str, seed: int) -> tuple[list[str], str]:
    """A bright-ball case whose first channel is in HU (ct_foreground), the second z-scored."""
    images, label = make_case(root, subject, seed)
    img = nib.load(images[0])
    save_nifti((np.asarray(img.dataobj) * 120.0 + 30.0).astype(np.float32), img.affine, images[0])
    for path, method in zip(images, ("ct_foreground", "zscore"), strict=True):
        sidecar = Path(path.replace(".nii.gz", ".json"))
        sidecar.write_text(json.dumps({"parameters": {"method": method, "percentiles": [0.5, 99.5]}}))
    return images, label


def _expected(images: list[list[str]], labels: list[str]) -> tuple[float, float, float, float]:
    """nnU-Net's CTNormalization statistics, computed directly: foreground of channel 0 of these subjects."""
    fg = np.concatenate(
        [
            np.asarray(nib.load(i[0]).dataobj, np.float64)[np.asarray(nib.load(lab).dataobj) > 0]
            for i, lab in zip(images, labels, strict=True)
        ]
    )
    low, high = np.percentile(fg, [0.5, 99.5])
    return float(low), float(high), float(fg.mean()), float(fg.std())


def _train(
    images: list[list[str]], labels: list[str], subjects: list[str], settings: dict[str, Any], out: Path
) -> Path:
    return train_fold(
        images,
        labels,
        out / "model.pt",
        out / "c.tsv",
        out / "c.png",
        subjects=subjects,
        fold=0,
        settings=settings,
        seed=3,
    )


def test_ct_foreground_is_fitted_per_fold_stored_and_applied(tmp_path: Path, tiny_settings: dict[str, Any]) -> None:
    subjects = ["A1", "A2", "A3", "A4"]
    made = [_hu_case(tmp_path / "data", s, i) for i, s in enumerate(subjects)]
    images, labels = [m[0] for m in made], [m[1] for m in made]
    model = _train(images, labels, subjects, tiny_settings, tmp_path / "all")
    (record,) = load_model(model).meta["input_normalisation"]
    assert record["method"] == "ct_foreground" and record["channel"] == 0 and record["sequence"] == "ch0"
    low, high, mean, sd = _expected(images, labels)
    assert (record["low"], record["high"], record["mean"], record["sd"]) == pytest.approx((low, high, mean, sd))
    assert record["n_subjects"] == 4
    assert json.loads((tmp_path / "all/model.pt.json").read_text())["input_normalisation"] == [record]
    # Another fold's training set gives other statistics: fitted on the fold, not on the cohort.
    other = _train(images[:2], labels[:2], subjects[:2], tiny_settings, tmp_path / "two")
    (record_two,) = load_model(other).meta["input_normalisation"]
    assert record_two["mean"] == pytest.approx(_expected(images[:2], labels[:2])[2])
    assert record_two["mean"] != pytest.approx(record["mean"])

    # Prediction on HU input = the same network on the input normalised by hand with the stored statistics.
    test_images, _ = _hu_case(tmp_path / "data", "T1", 99)
    stack = np.stack([np.asarray(nib.load(p).dataobj, np.float32) for p in test_images])
    by_hand = np.stack([(np.clip(stack[0], low, high) - mean) / sd, stack[1]]).astype(np.float32)
    np.testing.assert_allclose(apply_to_stack(stack, [record]), by_hand, rtol=1e-5, atol=1e-5)
    affine = nib.load(test_images[0]).affine
    manual = [str(save_nifti(by_hand[c], affine, tmp_path / f"manual/ch{c}.nii.gz")) for c in range(2)]
    payload = torch.load(model, map_location="cpu", weights_only=True)
    payload["meta"]["input_normalisation"] = []
    torch.save(payload, tmp_path / "plain.pt")
    probs = []
    for imgs, path, out in ((test_images, model, "hu"), (manual, tmp_path / "plain.pt", "manual")):
        d = tmp_path / out
        predict_case(
            imgs, str(path), d / "prob.nii.gz", d / "pred.nii.gz", d / "u.json", subject="T1", settings=tiny_settings
        )
        probs.append(np.asarray(nib.load(d / "prob.nii.gz").dataobj))
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)


def test_channels_must_share_a_normalisation_and_records_round_trip(
    tmp_path: Path, tiny_settings: dict[str, Any]
) -> None:
    made = [_hu_case(tmp_path, s, i) for i, s in enumerate(["B1", "B2"])]
    images, labels = [m[0] for m in made], [m[1] for m in made]
    Path(images[1][0].replace(".nii.gz", ".json")).write_text(json.dumps({"parameters": {"method": "zscore"}}))
    with pytest.raises(DataError, match=r"subject B2.*channel 0 was normalised with 'zscore' here but 'ct_foreground'"):
        _train(images, labels, ["B1", "B2"], tiny_settings, tmp_path / "m")
    fit = ForegroundNormalisation(0, "CT", (0.5, 99.5), -100.0, 200.0, 40.0, 50.0, 1000, 3)
    assert ForegroundNormalisation.from_record(json.loads(json.dumps(fit.record()))) == fit
    x = np.array([-500.0, 40.0, 1000.0])
    np.testing.assert_allclose(fit.apply(x), [(-100 - 40) / 50, 0.0, (200 - 40) / 50])


def test_the_normalise_stage_keeps_hu_and_records_what_training_reads(tmp_path: Path) -> None:
    """Across the boundary: the sidecar normalise_image writes is the one channel_methods reads."""
    from medpipe.preprocess.normalise import normalise_image
    from medpipe.segment.intensity import channel_methods

    rng = np.random.default_rng(0)
    ct = np.round(rng.normal(40.0, 30.0, (12, 12, 8)) - 1000.0 * (rng.random((12, 12, 8)) < 0.2)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    save_nifti(ct, affine, tmp_path / "ct.nii.gz")
    save_nifti(np.ones(ct.shape, np.uint8), affine, tmp_path / "mask.nii.gz")
    out = tmp_path / "norm/sub-S1_CT.nii.gz"
    settings = {"method": "zscore", "per_sequence": {"CT": {"method": "ct_foreground", "percentiles": [1.0, 99.0]}}}
    normalise_image(
        tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz", out, tmp_path / "qc.png",
        subject="S1", settings=settings, target_spacing_mm=None, sequence="CT",
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), ct)  # HU kept on the native grid
    assert channel_methods([[str(out)]], ["S1"]) == [{"method": "ct_foreground", "percentiles": [1.0, 99.0]}]
