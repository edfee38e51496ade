"""Training and prediction end to end on tiny synthetic cases (CPU, deterministic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from medpipe.core.errors import DataError
from medpipe.segment import sliding
from medpipe.segment.infer import predict_case
from medpipe.segment.model import load_model
from medpipe.segment.sliding import model_members, sliding_probabilities
from medpipe.segment.train import train_fold

from .conftest import AFFINE, SHAPE, make_case


def _train(cases: dict[str, Any], settings: dict[str, Any], out: Path, **kw: Any) -> Path:
    return train_fold(
        cases["images"],
        cases["labels"],
        out / "model.pt",
        out / "curve.tsv",
        out / "curve.png",
        subjects=cases["subjects"],
        fold=0,
        settings=settings,
        seed=3,
        **kw,
    )


def _predict(
    cases: dict[str, Any],
    model: Path | list[str],
    settings: dict[str, Any],
    out: Path,
    images: list[str] | None = None,
) -> dict[str, Any]:
    predict_case(
        images or cases["test_images"],
        model if isinstance(model, list) else str(model),
        out / "prob.nii.gz",
        out / "pred.nii.gz",
        out / "unc.json",
        subject="T1",
        settings=settings,
        out_uncertainty_map=out / "entropy.nii.gz",
        out_qc=out / "qc.png",
    )
    return json.loads((out / "unc.json").read_text())


@pytest.mark.parametrize(
    ("arch", "patch"), [("unet3d", [16, 16, 16]), ("unet2d", [16, 16, 4]), ("cascade", [16, 16, 16])]
)
def test_one_epoch_then_predict_in_input_geometry(
    cases: dict[str, Any], tiny_settings: dict[str, Any], tmp_path: Path, arch: str, patch: list[int]
) -> None:
    tiny_settings["model"]["architecture"] = arch
    tiny_settings["train"]["patch_size"] = patch
    model = _train(cases, tiny_settings, tmp_path / "m")
    curve = (tmp_path / "m" / "curve.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["epoch", "train_loss", "train_dice", "val_dice", "learning_rate"]
    assert len(curve) == 2 and float(curve[1].split("\t")[1]) > 0
    assert not (tmp_path / "m" / "checkpoint.pt").exists()  # removed after a completed run
    assert json.loads((tmp_path / "m" / "model.pt.json").read_text())["stage"] == "train"
    seg = load_model(model)
    assert set(seg.nets) == ({"fine", "coarse"} if arch == "cascade" else {"fine"})
    summary = _predict(cases, model, tiny_settings, tmp_path / "p")
    ref = nib.load(cases["test_images"][0])
    pred, prob = nib.load(tmp_path / "p" / "pred.nii.gz"), nib.load(tmp_path / "p" / "prob.nii.gz")
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    assert prob.shape == (*ref.shape, 2) and np.allclose(prob.affine, ref.affine)
    np.testing.assert_allclose(prob.get_fdata().sum(axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(pred.dataobj), prob.get_fdata().argmax(axis=-1))
    assert summary["n_members"] == (4 if arch == "unet2d" else 8)  # mirror TTA
    assert 0.0 <= summary["score"] <= 1.0 and isinstance(summary["flag"], bool)
    assert summary["subject"] == "T1" and summary["threshold"] == 0.35 and isinstance(summary["reasons"], list)


@pytest.mark.parametrize(("axis", "patch"), [(0, [1, 16, 16]), (1, [16, 1, 16])])
def test_unet2d_across_axis_0_or_1_trains_and_predicts_slice_by_slice(
    cases: dict[str, Any],
    tiny_settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    axis: int,
    patch: list[int],
) -> None:
    tiny_settings["model"].update(architecture="unet2d", slice_axis=axis)
    tiny_settings["train"].update(patch_size=patch, iterations_per_epoch=1)
    model = _train(cases, tiny_settings, tmp_path / "m")
    seg = load_model(model)
    assert seg.settings["model"]["slice_axis"] == axis
    summary = _predict(cases, model, tiny_settings, tmp_path / "p")
    assert nib.load(tmp_path / "p" / "pred.nii.gz").shape == nib.load(cases["test_images"][0]).shape
    assert summary["n_members"] == 4  # mirror TTA: the two in-plane axes
    net, settings = seg.nets["fine"], seg.settings
    image = torch.randn(1, 2, *SHAPE, generator=torch.Generator().manual_seed(1))
    probs = sliding_probabilities(net, image, settings)
    assert probs.shape == (1, 2, *SHAPE)
    for i in (0, 7):  # a slice predicted on its own is that slice of the volume's prediction
        torch.testing.assert_close(
            probs.narrow(2 + axis, i, 1), sliding_probabilities(net, image.narrow(2 + axis, i, 1), settings)
        )
    bumped = image.clone()
    bumped.select(2 + axis, 5).add_(5.0 * torch.randn(bumped.select(2 + axis, 5).shape))
    others = [d for d in range(5) if d != 2 + axis]
    diff = (sliding_probabilities(net, bumped, settings) - probs).abs().amax(dim=others)
    assert diff[5] > 1e-3
    assert float(torch.cat([diff[:5], diff[6:]]).max()) <= 1e-6  # no other slice changed
    flips: list[tuple[int, ...]] = []
    monkeypatch.setattr(sliding, "sliding_probabilities", lambda n, x, s, f, amp: flips.append(f) or probs)
    model_members(seg, image, {"tta": True})
    assert flips == [(), *[(a,) for a in range(3) if a != axis], tuple(a for a in range(3) if a != axis)]


def test_resume_after_crash_gives_identical_weights(
    cases: dict[str, Any], tiny_settings: dict[str, Any], tmp_path: Path
) -> None:
    tiny_settings["train"]["epochs"] = 3
    whole = _train(cases, tiny_settings, tmp_path / "a", deterministic=True, threads=2)

    def crash(epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        _train(cases, tiny_settings, tmp_path / "b", deterministic=True, threads=2, on_epoch_end=crash)
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "model.pt").exists()
    seen: list[int] = []
    resumed = _train(cases, tiny_settings, tmp_path / "b", deterministic=True, threads=2, on_epoch_end=seen.append)
    assert seen == [2]  # only the last epoch ran again
    a = torch.load(whole, weights_only=True)["state"]["fine"]
    b = torch.load(resumed, weights_only=True)["state"]["fine"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "a" / "curve.tsv").read_text() == (tmp_path / "b" / "curve.tsv").read_text()


def test_learns_bright_ball_and_fine_tunes(
    cases: dict[str, Any], tiny_settings: dict[str, Any], tmp_path: Path
) -> None:
    tiny_settings["train"].update(epochs=8, iterations_per_epoch=4, learning_rate=0.02)
    tiny_settings["loss"] = {"name": "boundary", "boundary_weight": [0.0, 0.2]}
    tiny_settings["model"]["deep_supervision"] = 1
    tiny_settings["val_fraction"] = 0.25
    model = _train(cases, tiny_settings, tmp_path / "m")
    curve = [line.split("\t") for line in (tmp_path / "m" / "curve.tsv").read_text().splitlines()[1:]]
    assert float(curve[-1][1]) < float(curve[0][1])  # loss fell
    assert curve[-1][3] != "NA"  # validation Dice computed
    _predict(cases, model, tiny_settings, tmp_path / "p")
    pred = np.asarray(nib.load(tmp_path / "p" / "pred.nii.gz").dataobj) > 0
    truth = np.asarray(nib.load(cases["test_label"]).dataobj) > 0
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.7
    # transfer learning with a frozen encoder: encoder weights stay, decoder weights move
    tiny_settings["train"].update(epochs=1, init_checkpoint=str(model), freeze_encoder=True)
    tuned = _train(cases, tiny_settings, tmp_path / "t")
    a, b = (torch.load(p, weights_only=True)["state"]["fine"] for p in (model, tuned))
    assert torch.equal(a["input_block.0.conv1.conv.weight"], b["input_block.0.conv1.conv.weight"])
    assert not torch.equal(a["output_block.conv.conv.weight"], b["output_block.conv.conv.weight"])
    # ensemble of two models: twice the members
    summary = _predict(cases, [str(model), str(tuned)], tiny_settings, tmp_path / "e")
    assert summary["n_members"] == 16


def test_case_smaller_than_patch_is_padded(tmp_path: Path, tiny_settings: dict[str, Any]) -> None:
    subjects = ["S1", "S2"]
    made = [make_case(tmp_path, s, i, shape=(12, 10, 14)) for i, s in enumerate(subjects)]
    model = train_fold(
        [m[0] for m in made],
        [m[1] for m in made],
        tmp_path / "m.pt",
        tmp_path / "c.tsv",
        tmp_path / "c.png",
        subjects=subjects,
        fold=0,
        settings=tiny_settings,
        seed=1,
    )
    predict_case(
        made[0][0],
        str(model),
        tmp_path / "prob.nii.gz",
        tmp_path / "pred.nii.gz",
        tmp_path / "u.json",
        subject="S1",
        settings=tiny_settings,
    )
    assert nib.load(tmp_path / "pred.nii.gz").shape == (12, 10, 14)


def test_bad_inputs_are_named(cases: dict[str, Any], tiny_settings: dict[str, Any], tmp_path: Path) -> None:
    empty_images, empty_label = make_case(tmp_path / "x", "E1", 5, empty=True)
    with pytest.raises(DataError, match=r"subject E1.*label is empty"):
        train_fold(
            [*cases["images"], empty_images],
            [*cases["labels"], empty_label],
            tmp_path / "m.pt",
            tmp_path / "c.tsv",
            tmp_path / "c.png",
            subjects=[*cases["subjects"], "E1"],
            fold=0,
            settings=tiny_settings,
            seed=1,
        )
    one_channel, label = make_case(tmp_path / "x", "C1", 6, channels=1)
    with pytest.raises(DataError, match=r"subject C1.*1 input channels"):
        train_fold(
            [*cases["images"], one_channel],
            [*cases["labels"], label],
            tmp_path / "m.pt",
            tmp_path / "c.tsv",
            tmp_path / "c.png",
            subjects=[*cases["subjects"], "C1"],
            fold=0,
            settings=tiny_settings,
            seed=1,
        )
    model = _train(cases, tiny_settings, tmp_path / "m")
    with pytest.raises(DataError, match=r"1 input images given but model model.pt was trained on 2"):
        _predict(cases, model, tiny_settings, tmp_path / "p", images=one_channel)
    shifted = tmp_path / "shifted.nii.gz"
    moved = AFFINE.copy()
    moved[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.zeros((20, 24, 18), np.float32), moved), shifted)
    from medpipe.core.errors import GeometryError

    with pytest.raises(GeometryError, match="grids differ"):
        _predict(cases, model, tiny_settings, tmp_path / "p", images=[cases["test_images"][0], str(shifted)])
