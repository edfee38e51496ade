"""Benchmark: tumour (GTV) segmentation on MR T1 of the 38 IBSI soft-tissue-sarcoma patients.

Uses the committed, seeded 5-fold split ``config/splits/ibsi_sts_5fold.json``. For each requested
fold: resample MR T1 (and optionally PET, onto the MR grid) to ``--spacing`` mm, z-score each channel,
train with :func:`medpipe.segment.train.train_fold`, predict the held-out patients with
:func:`medpipe.segment.infer.predict_case`, bring the foreground probability back to each patient's native
MR grid (linear, threshold 0.5) and score Dice against the clinicians' mask there. The
centred-ellipsoid baseline (mean tumour size of the training patients, centred in the image) is
scored beside every result. The pipeline's default postprocessing (:func:`medpipe.postprocess.clean.clean_binary`:
largest 26-connected component, hole filling, on the native grid) is applied to the same prediction and
scored too ("Dice pp"); the raw thresholded prediction is reported beside it.

Example (reduced CPU config, fold 0, about 48 min on 2 cores: 46 min training, 1 min inference)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/seg_sts.py --folds 0 \
        --out benchmarks/results/seg_sts_cpu_fold0.md
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medpipe.core.config import with_defaults
from medpipe.core.io import load_nifti, nib_to_sitk, save_nifti, sitk_to_nib
from medpipe.core.overlap import dice_score
from medpipe.core.records import read_uncertainty
from medpipe.postprocess.clean import clean_binary
from medpipe.segment.infer import predict_case
from medpipe.segment.split import read_folds
from medpipe.segment.train import train_fold

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "config" / "splits" / "ibsi_sts_5fold.json"
logger = logging.getLogger("seg_sts")

#: Reduced CPU configuration (config["segmentation"] layout); --epochs / --iterations override.
CPU_SETTINGS: dict[str, Any] = {
    "num_classes": 2,
    "model": {
        "architecture": "unet3d",
        "channels": [16, 32, 64, 128],
        "strides": [2, 2, 2],
        "num_res_units": 1,
        "squeeze_excitation": True,
        "deep_supervision": 0,
    },
    "loss": {"name": "dice_ce"},
    "train": {
        "epochs": 200,
        "iterations_per_epoch": 25,
        "batch_size": 2,
        "patch_size": [64, 64, 32],
        "foreground_ratio": 0.6,
        "learning_rate": 0.003,
        "augment": True,
    },
    "augment": {"elastic": 0.0},
    "infer": {"overlap": 0.5, "tta": True, "sw_batch_size": 4},
}


def _resample(
    img: nib.Nifti1Image, spacing: list[float] | None, reference: sitk.Image | None, interp: int
) -> sitk.Image:
    src = nib_to_sitk(img, dtype=np.float32)
    if reference is None:
        if spacing is None:
            return src
        size = [max(1, round(n * s / t)) for n, s, t in zip(src.GetSize(), src.GetSpacing(), spacing, strict=True)]
        reference = sitk.Image(size, sitk.sitkFloat32)
        reference.SetSpacing(spacing)
        reference.SetDirection(src.GetDirection())
        half = [(n * s - t * m) / 2 for n, s, t, m in zip(src.GetSize(), src.GetSpacing(), spacing, size, strict=True)]
        corner = np.asarray(src.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
        d = np.asarray(src.GetDirection()).reshape(3, 3)
        origin = corner + d @ (np.asarray(spacing) / 2 + np.asarray(half))
        reference.SetOrigin([float(v) for v in origin])
    return sitk.Resample(src, reference, sitk.Transform(), interp, 0.0, sitk.sitkFloat32)


def prepare(patient: str, data: Path, work: Path, spacing: list[float], pet: bool) -> tuple[list[str], str]:
    """Resampled, z-scored channels and resampled mask of one patient (cached in ``work``)."""
    out = work / patient
    names = ["MR_T1", *(["PET"] if pet else [])]
    images = [str(out / f"{n}.nii.gz") for n in names]
    label = str(out / "mask.nii.gz")
    if all(Path(p).exists() for p in [*images, label]):
        return images, label
    mr = _resample(load_nifti(data / patient / "MR_T1_image.nii.gz"), spacing, None, sitk.sitkLinear)
    mask = _resample(load_nifti(data / patient / "MR_T1_mask.nii.gz"), spacing, None, sitk.sitkLinear)
    channels = [mr]
    if pet:
        channels.append(_resample(load_nifti(data / patient / "PET_image.nii.gz"), None, mr, sitk.sitkLinear))
    for path, ch in zip(images, channels, strict=True):
        img = sitk_to_nib(ch)
        arr = np.asarray(img.dataobj, dtype=np.float32)
        save_nifti((arr - arr.mean()) / (arr.std() + 1e-6), img.affine, path)
    m = sitk_to_nib(mask)
    save_nifti((np.asarray(m.dataobj) >= 0.5).astype(np.uint8), m.affine, label)
    return images, label


def to_native(prob_path: Path, native: nib.Nifti1Image) -> np.ndarray:
    """Foreground probability resampled onto the native MR grid (linear), thresholded at 0.5."""
    prob = nib.load(prob_path)
    fg = nib.Nifti1Image(np.asarray(prob.dataobj)[..., 1].astype(np.float32), prob.affine)
    ref = nib_to_sitk(native, dtype=np.float32)
    res = sitk.Resample(nib_to_sitk(fg), ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out = sitk_to_nib(res)
    if out.shape != native.shape or not np.allclose(out.affine, native.affine, atol=1e-4):
        raise RuntimeError("prediction is not on the native grid")
    return np.asarray(out.dataobj) >= 0.5


def ellipsoid_baseline(train: list[str], data: Path) -> np.ndarray:
    """Mean semi-axes (mm, along the image axes) of the training tumours, scaled to their mean volume."""
    axes, volumes = [], []
    for p in train:
        m = nib.load(data / p / "MR_T1_mask.nii.gz")
        sp = np.asarray(m.header.get_zooms()[:3], float)
        idx = np.argwhere(np.asarray(m.dataobj) > 0) * sp
        axes.append(np.sqrt(5.0 * idx.var(axis=0)))  # solid ellipsoid: var = a^2 / 5
        volumes.append(len(idx) * sp.prod())
    mean_axes = np.mean(axes, axis=0)
    scale = (np.mean(volumes) / (4 / 3 * np.pi * mean_axes.prod())) ** (1 / 3)
    return mean_axes * scale


def ellipsoid_mask(native: nib.Nifti1Image, semi_axes: np.ndarray) -> np.ndarray:
    sp = np.asarray(native.header.get_zooms()[:3], float)
    grid = np.indices(native.shape[:3]).astype(float)
    centre = (np.asarray(native.shape[:3]) - 1) / 2
    r2 = sum(((grid[a] - centre[a]) * sp[a] / semi_axes[a]) ** 2 for a in range(3))
    return r2 <= 1.0


def run_fold(fold: int, args: argparse.Namespace, split: dict[str, Any], settings: dict[str, Any]) -> list[dict]:
    data, work = Path(args.data), Path(args.work) / ("mr_pet" if args.pet else "mr")
    info = split["folds"][fold]
    train = sorted(info["train"] + info["val"])
    test = sorted(info["test"])
    if args.max_test:
        test = test[: args.max_test]
    prepared = {p: prepare(p, data, work, args.spacing, args.pet) for p in train + test}
    t0 = time.monotonic()
    model = train_fold(
        [prepared[p][0] for p in train],
        [prepared[p][1] for p in train],
        work / f"fold-{fold}" / "model.pt",
        work / f"fold-{fold}" / "learning_curve.tsv",
        work / f"fold-{fold}" / "learning_curve.png",
        subjects=train,
        fold=fold,
        settings=settings,
        seed=split["seed"],
        deterministic=False,
        threads=args.threads,
    )
    train_s = time.monotonic() - t0
    semi = ellipsoid_baseline(train, data)
    rows = []
    for p in test:
        out = work / f"fold-{fold}" / p
        t1 = time.monotonic()
        predict_case(
            prepared[p][0],
            str(model),
            out / "prob.nii.gz",
            out / "pred.nii.gz",
            out / "unc.json",
            subject=p,
            settings=settings,
            threads=args.threads,
        )
        infer_s = time.monotonic() - t1
        native = nib.load(data / p / "MR_T1_image.nii.gz")
        truth = np.asarray(nib.load(data / p / "MR_T1_mask.nii.gz").dataobj) > 0
        pred = to_native(out / "prob.nii.gz", native)
        settings = with_defaults({}, "postprocess")
        cleaned = clean_binary(pred, native.header.get_zooms()[:3], settings, largest_component=True)
        unc = read_uncertainty(out / "unc.json")
        rows.append(
            {
                "fold": fold,
                "patient": p,
                "dice_raw": dice_score(pred, truth),
                "dice": dice_score(cleaned, truth),
                "baseline": dice_score(ellipsoid_mask(native, semi), truth),
                "infer_s": infer_s,
                "train_s": train_s,
                "uncertainty": unc.score,
                "flagged": unc.flag,
            }
        )
        logger.info(
            "%s: Dice %.3f (raw %.3f, ellipsoid %.3f), %.1f s",
            p,
            rows[-1]["dice"],
            rows[-1]["dice_raw"],
            rows[-1]["baseline"],
            infer_s,
        )
    return rows


def report(rows: list[dict], args: argparse.Namespace, settings: dict[str, Any], out: Path) -> None:
    d = np.array([r["dice"] for r in rows])
    raw = np.array([r["dice_raw"] for r in rows])
    b = np.array([r["baseline"] for r in rows])
    lines = [
        f"# STS tumour segmentation, MR T1{' + PET' if args.pet else ''}, folds {args.folds}",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`",
        "",
        f"Spacing {args.spacing} mm; training time per fold "
        f"{', '.join(f'{t:.0f} s' for t in sorted({r['train_s'] for r in rows}))}; threads {args.threads}.",
        "",
        "| fold | patient | Dice pp | Dice raw | ellipsoid baseline | uncertainty | flagged | inference s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['fold']} | {r['patient']} | {r['dice']:.3f} | {r['dice_raw']:.3f} | {r['baseline']:.3f} | "
        f"{r['uncertainty']:.3f} | "
        f"{'yes' if r['flagged'] else 'no'} | {r['infer_s']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        f"**Mean Dice {d.mean():.3f} (median {np.median(d):.3f}) after postprocessing, {raw.mean():.3f} "
        f"(median {np.median(raw):.3f}) raw, vs ellipsoid baseline {b.mean():.3f} "
        f"(median {np.median(b):.3f}); n = {len(rows)}.**",
        "",
        "Settings:",
        "",
        "```json",
        json.dumps(settings, indent=1, sort_keys=True),
        "```",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"mean Dice {d.mean():.3f} (median {np.median(d):.3f}), ellipsoid {b.mean():.3f}; wrote {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ibsi_sts" / "nifti"))
    ap.add_argument("--work", default="/tmp/medpipe_seg_sts")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "seg_sts.md"))
    ap.add_argument("--folds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    ap.add_argument("--spacing", type=lambda s: [float(v) for v in s.split(",")], default=[2.0, 2.0, 4.0])
    ap.add_argument("--pet", action="store_true", help="MR T1 + PET (PET resampled onto the MR grid)")
    ap.add_argument("--epochs", type=int, help="override the epochs of the reduced CPU config")
    ap.add_argument("--iterations", type=int, help="override iterations per epoch")
    ap.add_argument("--patch", type=lambda s: [int(v) for v in s.split(",")], help="override the patch size")
    ap.add_argument("--full", action="store_true", help="GPU config: larger net, patches and budget")
    ap.add_argument("--max-test", type=int, default=0, help="score only the first N held-out patients (smoke)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = copy.deepcopy(CPU_SETTINGS)
    if args.full:
        settings["model"]["channels"] = [32, 64, 128, 256, 320]
        settings["model"]["strides"] = [2, 2, 2, 2]
        settings["model"]["deep_supervision"] = 2
        settings["train"].update(epochs=300, iterations_per_epoch=100, batch_size=4, patch_size=[96, 96, 48])
    if args.epochs:
        settings["train"]["epochs"] = args.epochs
    if args.iterations:
        settings["train"]["iterations_per_epoch"] = args.iterations
    if args.patch:
        settings["train"]["patch_size"] = args.patch
    split = read_folds(SPLIT)
    rows = [r for k in args.folds for r in run_fold(k, args, split, settings)]
    report(rows, args, settings, Path(args.out))


if __name__ == "__main__":
    main()
