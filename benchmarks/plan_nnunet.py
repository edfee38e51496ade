"""Benchmark: medpipe's automatic plan beside nnU-Net v2's planner (nnunetv2 2.8.1) on the same images.

For one cohort (``--cohort sts``: the IBSI soft-tissue-sarcoma patients' MR T1 and tumour masks; ``--cohort demo``:
medpipe's generated demo cohort after N4, T1w + T2w and the human masks) the script

1. builds an nnU-Net raw dataset in a work folder (``Dataset9xx_Name/imagesTr/<case>_0000.nii.gz``,
   ``labelsTr/<case>.nii.gz``, ``dataset.json``) of symbolic links to the files medpipe reads (a label whose values
   are not 0/1 is binarised ``> 0`` into the work folder and both planners read that copy; a case whose label is
   not on its image's grid is skipped and named);
2. runs nnU-Net's fingerprint extraction and experiment planning there, in a subprocess with ``--nnunet-python``
   (``nnUNetv2_extract_fingerprint -d ID -np 1 --verify_dataset_integrity``, ``nnUNetv2_plan_experiment -d ID``;
   no preprocessing, no training), and its memory estimate of each planned network;
3. runs :func:`medpipe.segment.dataset_fingerprint.compute_dataset_fingerprint` and
   :func:`medpipe.segment.plan.make_plan` with ``Budget(memory_mb=8192.0)`` (nnU-Net's own 8 GB target): the plan as
   it is (``plan: auto``), and with the architecture typed as ``unet2d``, ``unet3d`` (and ``cascade`` when either
   planner wants one), so that each nnU-Net configuration has a medpipe counterpart;
4. writes the comparison (``--out``) and copies nnU-Net's ``nnUNetPlans.json`` and medpipe's ``plan.json`` (the
   ``auto`` plan) beside it as ``<out stem>_nnUNetPlans.json`` and ``<out stem>_medpipe_plan.json``.

The nnU-Net interpreter lives outside the repository and needs only nnunetv2 and its dependencies; torch comes from
the project's venv (its CPU build), added after the interpreter's own site-packages by a ``.pth`` file. Setup
(repository root; torch is left out of the constraints because the lock pins the CPU build that PyPI does not
serve under that name)::

    python3.11 -m venv /work/nnunet-venv
    /work/nnunet-venv/bin/pip install --no-deps nnunetv2==2.8.1 acvl-utils==0.2.6 \
        dynamic-network-architectures==0.4.4 batchgeneratorsv2==0.3.6 "timm<1.0.23"
    grep -v '^torch==' requirements.lock > /tmp/nnunet-constraints.txt
    /work/nnunet-venv/bin/pip install -c /tmp/nnunet-constraints.txt tqdm scipy "batchgenerators>=0.25.1" numpy \
        scikit-learn "scikit-image>=0.19.3" "SimpleITK>=2.2.1" pandas graphviz tifffile requests nibabel \
        matplotlib seaborn imagecodecs yacs einops "blosc2>=3.3.2" connected-components-3d
    echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /work/nnunet-venv/lib/python3.11/site-packages/zz_medpipe_torch.pth

Usage (repository root; about 1 min for ``demo``, 3 min for ``sts`` on 2 CPU cores)::

    .venv/bin/python benchmarks/plan_nnunet.py --cohort sts --out benchmarks/results/plan_nnunet_sts.md \
        --nnunet-python /work/nnunet-venv/bin/python
    .venv/bin/python benchmarks/plan_nnunet.py --cohort demo --out benchmarks/results/plan_nnunet_demo.md \
        --nnunet-python /work/nnunet-venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medpipe.core.geometry import geometry_of, grid_differences
from medpipe.core.io import load_nifti
from medpipe.core.plan_record import Plan
from medpipe.segment import plan_rules as rules
from medpipe.segment.dataset_fingerprint import DatasetFingerprint, compute_dataset_fingerprint
from medpipe.segment.plan import Budget, make_plan

REPO = Path(__file__).resolve().parents[1]
logger = logging.getLogger("plan_nnunet")

#: nnU-Net's default GPU memory target (``ExperimentPlanner(gpu_memory_target_in_gb=8)``), in MiB.
MEMORY_MB = 8192.0
#: Configurations of nnU-Net's plans that have a network (``3d_cascade_fullres`` inherits ``3d_fullres``'s).
NNUNET_CONFIGS = ("2d", "3d_fullres", "3d_lowres")
#: Key of the architecture decision in a medpipe plan.
ARCH = "segmentation.model.architecture"
BATCH = "segmentation.train.batch_size"

#: Run in the nnU-Net interpreter after planning: its feature-map estimate of every planned network and the
#: planner's reference values (argv: dataset ID, output JSON).
ESTIMATE_CODE = """
import importlib.metadata, json, sys
import torch
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.paths import nnUNet_preprocessed
from batchgenerators.utilities.file_and_folder_operations import join, load_json
p = ExperimentPlanner(int(sys.argv[1]))
plans = load_json(join(nnUNet_preprocessed, p.dataset_name, 'nnUNetPlans.json'))
out = {'version': importlib.metadata.version('nnunetv2'), 'torch': torch.__version__,
       'reference': {'2d': p.UNet_reference_val_2d, '3d': p.UNet_reference_val_3d},
       'reference_batch': {'2d': p.UNet_reference_val_corresp_bs_2d, '3d': p.UNet_reference_val_corresp_bs_3d},
       'reference_gb': p.UNet_reference_val_corresp_GB, 'target_gb': p.UNet_vram_target_GB, 'estimate': {}}
n_in, n_out = len(p.dataset_json['channel_names']), len(p.dataset_json['labels'])
for name, conf in plans['configurations'].items():
    if 'architecture' in conf:
        a = conf['architecture']
        out['estimate'][name] = int(p.static_estimate_VRAM_usage(tuple(conf['patch_size']), n_in, n_out,
            a['network_class_name'], a['arch_kwargs'], tuple(a['_kw_requires_import'])))
json.dump(out, open(sys.argv[2], 'w'), indent=1)
"""


@dataclass(frozen=True)
class Case:
    """One training case: ID, one image per channel (channel order), label on the images' grid."""

    subject: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class Cohort:
    """The cases both planners read, and what the script found on the way."""

    name: str
    dataset_id: int
    description: str
    channels: tuple[str, ...]
    modalities: tuple[str, ...]
    cases: tuple[Case, ...]
    notes: tuple[str, ...]


def _shown(path: Path) -> str:
    """``path`` relative to the repository's parent folder when inside it (``../shared/...`` reads as
    ``shared/...``), else as given."""
    try:
        return str(path.resolve().relative_to(REPO.parent))
    except ValueError:
        return str(path)


def _fmt(value: Any) -> str:
    """Compact JSON (lists as ``[a, b]``; floats as written), ``|`` escaped for a markdown cell."""
    if isinstance(value, str):
        return value.replace("|", "/")
    return json.dumps(value, separators=(", ", ": ")).replace("|", "/")


def _check_case(case: Case, work: Path) -> tuple[Case | None, str | None]:
    """The case with a 0/1 label (binarised into ``work`` if needed), or ``None`` and why it is skipped."""
    label = load_nifti(case.label, subject=case.subject)
    for image in case.images:
        diffs = grid_differences(geometry_of(load_nifti(image, subject=case.subject)), geometry_of(label))
        if diffs:
            return None, f"{case.subject}: label not on the grid of {image.name} ({'; '.join(diffs)}): skipped"
    values = np.unique(np.asarray(label.dataobj))
    if set(values.tolist()) <= {0, 1}:
        return case, None
    out = work / "binarised" / f"{case.subject}.nii.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = (np.asarray(label.dataobj) > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, label.affine, label.header), out)
    note = f"{case.subject}: label values {values[:6].tolist()}: binarised > 0"
    return replace(case, label=out), note


def sts_cohort(data: Path, work: Path) -> Cohort:
    """The STS patients with both ``MR_T1_image.nii.gz`` and ``MR_T1_mask.nii.gz`` (others named in the notes)."""
    cases, notes = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and p.name.startswith("STS_")):
        image, mask = folder / "MR_T1_image.nii.gz", folder / "MR_T1_mask.nii.gz"
        if not (image.exists() and mask.exists()):
            notes.append(f"{folder.name}: no MR_T1 image and mask: left out")
            continue
        case, note = _check_case(Case(folder.name, (image,), mask), work)
        notes += [note] if note else []
        cases += [case] if case else []
    description = (
        f"IBSI soft-tissue sarcoma, MR T1 and the clinicians' tumour mask ({_shown(data)}; "
        f"{len(cases)} of {len(cases) + sum('left out' in n or 'skipped' in n for n in notes)} patient folders)"
    )
    return Cohort("sts", 901, description, ("MR_T1",), ("MR",), tuple(cases), tuple(notes))


def demo_cohort(results: Path, work: Path) -> Cohort:
    """Demo subjects: N4-corrected T1w and T2w (``results/n4``) and the human masks (``results/convert``)."""
    cases, notes = [], []
    for folder in sorted((results / "n4").glob("sub-*")):
        s = folder.name
        images = (folder / f"{s}_T1w.nii.gz", folder / f"{s}_T2w.nii.gz")
        label = results / "convert" / s / f"{s}_desc-human_mask.nii.gz"
        if not (all(p.exists() for p in images) and label.exists()):
            notes.append(f"{s}: T1w, T2w or the human mask missing: left out")
            continue
        case, note = _check_case(Case(s, images, label), work)
        notes += [note] if note else []
        cases += [case] if case else []
    description = (
        f"medpipe's generated demo cohort after N4 ({results}/n4, masks from {results}/convert): {len(cases)} "
        "subjects, T1w + T2w. The 4-subject cohort of a finished demo run, not the bigger default of "
        "`medpipe demo-data`, which would need the workflow run to N4 first"
    )
    return Cohort("demo", 902, description, ("T1w", "T2w"), ("MR", "MR"), tuple(cases), tuple(notes))


def build_raw(cohort: Cohort, raw: Path) -> Path:
    """nnU-Net raw dataset of symbolic links to the cohort's files.

    Parameters
    ----------
    cohort
        The cases; channel ``c`` of a case becomes ``imagesTr/<case>_000c.nii.gz``.
    raw
        ``nnUNet_raw``: ``Dataset<ID>_<NAME>`` is made (anew) inside it.

    Returns
    -------
    Path
        The dataset folder.
    """
    folder = raw / f"Dataset{cohort.dataset_id}_{cohort.name.upper()}"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case in cohort.cases:
        for c, image in enumerate(case.images):
            (folder / "imagesTr" / f"{case.subject}_{c:04d}.nii.gz").symlink_to(image.resolve())
        (folder / "labelsTr" / f"{case.subject}.nii.gz").symlink_to(case.label.resolve())
    dataset = {
        "channel_names": {str(c): name for c, name in enumerate(cohort.channels)},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(cohort.cases),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return folder


def nnunet_commands(python: Path, dataset_id: int, estimate_out: Path) -> list[list[str]]:
    """The nnU-Net steps, each run with ``python`` (console scripts next to it)."""
    bin_dir = python.parent
    return [
        [str(python), str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", str(dataset_id), "-np", "1",
         "--verify_dataset_integrity"],
        [str(python), str(bin_dir / "nnUNetv2_plan_experiment"), "-d", str(dataset_id)],
        [str(python), "-c", ESTIMATE_CODE, str(dataset_id), str(estimate_out)],
    ]  # fmt: skip


def run_nnunet(python: Path, cohort: Cohort, work: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """nnU-Net's fingerprint extraction and experiment planning on the cohort, in a subprocess.

    Parameters
    ----------
    python
        Interpreter with nnunetv2 (its console scripts next to it).
    cohort
        The cases (:func:`build_raw`).
    work
        Holds ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``, the log ``nnunet.log`` and a copy of
        ``nnUNetPlans.json``.

    Returns
    -------
    tuple of dict
        ``dataset_fingerprint.json``, ``nnUNetPlans.json`` and the memory estimates (:data:`ESTIMATE_CODE`).

    Raises
    ------
    RuntimeError
        When a step exits non-zero (its output is in the log).
    """
    dirs = {k: work / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    folder = build_raw(cohort, dirs["nnUNet_raw"])
    pre = dirs["nnUNet_preprocessed"] / folder.name
    if pre.exists():
        shutil.rmtree(pre)
    env = dict(os.environ, **{k: str(v) for k, v in dirs.items()})
    env.setdefault("nnUNet_n_proc_DA", "2")
    estimate_out = work / "nnunet_estimates.json"
    log = work / "nnunet.log"
    with log.open("w") as fh:
        for cmd in nnunet_commands(python, cohort.dataset_id, estimate_out):
            logger.info("nnU-Net: %s", shlex.join(cmd[:2] + (["<estimate code>"] if cmd[1] == "-c" else cmd[2:])))
            fh.write("$ " + shlex.join(cmd) + "\n")
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=work, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"nnU-Net step failed (exit {proc.returncode}); see {log}")
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    shutil.copyfile(pre / "nnUNetPlans.json", work / "nnUNetPlans.json")
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    return fingerprint, plans, json.loads(estimate_out.read_text())


def medpipe_plans(cohort: Cohort) -> tuple[DatasetFingerprint, dict[str, Plan]]:
    """medpipe's fingerprint and plans at nnU-Net's 8 GB.

    Parameters
    ----------
    cohort
        The cases.

    Returns
    -------
    DatasetFingerprint
        Of all cases.
    dict of str to Plan
        ``auto`` (nothing typed) and the plans with ``segmentation.model.architecture`` typed ``unet2d``,
        ``unet3d`` and ``cascade`` (the report shows the cascade when nnU-Net plans 3d_lowres, plan: auto is a
        cascade or the 3D patch holds < 25 % of the median image).
    """
    fp = compute_dataset_fingerprint(
        [[str(p) for p in c.images] for c in cohort.cases],
        [str(c.label) for c in cohort.cases],
        subjects=[c.subject for c in cohort.cases],
        channels=list(cohort.channels),
        modalities=list(cohort.modalities),
    )
    budget = Budget(memory_mb=MEMORY_MB)
    plans = {"auto": make_plan(fp, budget=budget)}
    for arch in ("unet2d", "unet3d", "cascade"):
        plans[arch] = make_plan(fp, overrides={"segmentation": {"model": {"architecture": arch}}}, budget=budget)
    return fp, plans


def _coverage(plan: Plan) -> float:
    """Share of the median image (at the target spacing) that a 3D plan's patch holds."""
    patch = plan.value("segmentation.train.patch_size")
    return float(np.prod(patch) / np.prod(plan.inputs["median_shape_at_target"]))


def _decision(plan: Plan, key: str) -> Any:
    """The :class:`~medpipe.core.plan_record.Decision` on ``key``."""
    return next(d for d in plan.decisions if d.key == key)


# ----------------------------------------------------------------------------------------------- axes and values


def to_medpipe_axes(values: Sequence[Any], transpose_forward: Sequence[int], fill: Any) -> list[Any]:
    """nnU-Net's per-axis ``values`` (its transposed SimpleITK order; 2 entries for 2d: the last two axes) in
    medpipe's array order (NIfTI voxel axes i, j, k); the axis a 2d configuration slices along gets ``fill``.

    SimpleITK's array axis ``s`` is NIfTI axis ``2 - s``; nnU-Net's axis ``a`` is SimpleITK's
    ``transpose_forward[a]``.
    """
    offset = 3 - len(values)
    out = [fill] * 3
    for a, v in enumerate(values):
        out[2 - int(transpose_forward[a + offset])] = v
    return out


def _num(v: Any) -> Any:
    """Round floats for display; ints stay ints."""
    if isinstance(v, float):
        return int(v) if v.is_integer() else round(v, 4)
    return v


def nnunet_rows(
    conf: dict[str, Any], tf: Sequence[int], est: dict[str, Any], name: str, dataset_voxels: float
) -> dict[str, str]:
    """Display values of one nnU-Net configuration, in medpipe's axis order; ``dataset_voxels``: nnU-Net's
    ``approximate_n_voxels_dataset`` for it (median image x cases; 2d uses the 3D median image)."""
    arch = conf["architecture"]["arch_kwargs"]
    dims = len(conf["patch_size"])
    key = "2d" if dims == 2 else "3d"
    strides = [to_medpipe_axes(s, tf, 1) for s in arch["strides"]]
    kernels = [to_medpipe_axes(k, tf, 1) for k in arch["kernel_sizes"]]
    pools = [sum(s[a] == 2 for s in strides) for a in range(3)]
    ref = est["reference"][key] * est["target_gb"] / est["reference_gb"]
    ref_bs = est["reference_batch"][key]
    estimate = est["estimate"][name]
    by_memory = round(ref / estimate * ref_bs)
    voxels = float(np.prod(conf["median_image_size_in_voxels"]))
    cap = round(dataset_voxels * rules.MAX_DATASET_COVERED / float(np.prod(conf["patch_size"])))
    return {
        "spacing": _fmt(to_medpipe_axes([_num(float(v)) for v in conf["spacing"]], tf, "native")),
        "median": _fmt(to_medpipe_axes([_num(float(v)) for v in conf["median_image_size_in_voxels"]], tf, "-")),
        "patch": _fmt(to_medpipe_axes([int(v) for v in conf["patch_size"]], tf, 1)),
        "coverage": f"{100 * np.prod(conf['patch_size']) / voxels:.1f} %" + (" of a slice" if dims == 2 else ""),
        "batch": str(conf["batch_size"]),
        "pools": _fmt(pools),
        "strides": _fmt(strides),
        "kernels": _fmt(kernels),
        "stages": str(arch["n_stages"]),
        "convs": f"encoder {_fmt(list(arch['n_conv_per_stage']))}, "
        f"decoder {_fmt(list(arch['n_conv_per_stage_decoder']))}",
        "features": _fmt(list(arch["features_per_stage"])),
        "network": "PlainConvUNet (conv, InstanceNorm, LeakyReLU; no residuals, no SE)",
        "norm": ", ".join(
            f"{s} (mask {'yes' if m else 'no'})"
            for s, m in zip(conf["normalization_schemes"], conf["use_mask_for_norm"], strict=True)
        ),
        "memory": (
            f"{estimate / 1e6:.0f} M feature-map elements per sample (compute_conv_feature_map_size); fits when "
            f"estimate x 2 / {ref_bs} <= {ref / 1e6:.0f} M (reference {est['reference'][key] / 1e6:.0f} M at batch "
            f"{ref_bs} for {est['reference_gb']} GB, target {est['target_gb']:g} GB); memory allows batch "
            f"round({ref / 1e6:.0f} / "
            f"{estimate / 1e6:.0f} x {ref_bs}) = {by_memory}"
        ),
        "batch_rule": f"memory {by_memory}; 5 % of the dataset's voxels {cap}; at least 2",
        "batch_dice": str(conf.get("batch_dice")),
    }


def medpipe_rows(plan: Plan, channels: Sequence[str]) -> dict[str, str]:
    """Display values of one medpipe plan (its array axis order; a 2D plan's slice axis is ``slice_axis``)."""
    arch = plan.value(ARCH)
    dims = 2 if arch == "unet2d" else 3
    axis = int(plan.value("segmentation.model.slice_axis")) if dims == 2 else -1  # -1: no slice axis (3D)
    order = [a for a in range(3) if a != axis] + ([axis] if dims == 2 else [])  # in-plane axes, then the slices
    patch = [int(v) for v in plan.value("segmentation.train.patch_size")]
    strides = [int(s) for s in plan.value("segmentation.model.strides")]
    features = [int(f) for f in plan.value("segmentation.model.channels")]
    per_stage = [[1, 1, 1]] + [[1 if a == axis else s for a in range(3)] for s in strides]
    median = [_num(float(v)) for v in plan.inputs["median_shape_at_target"]]
    batch = int(plan.value("segmentation.train.batch_size"))
    coverage = np.prod(patch) / np.prod([1 if a == axis else m for a, m in enumerate(median)])
    cascade = "-"
    if arch == "cascade":
        cascade = f"yes, coarse_factor {plan.value('segmentation.model.cascade.coarse_factor')}"
    mem = rules.memory_mb([patch[a] for a in order], batch, features, dims)
    spacing = [_num(float(v)) for v in plan.value("preprocess.target_spacing_mm")]
    return {
        "spacing": _fmt([f"{v} (slices)" if a == axis else v for a, v in enumerate(spacing)]),
        "median": _fmt(median),
        "patch": _fmt(patch),
        "coverage": f"{100 * coverage:.1f} %" + (" of a slice" if dims == 2 else ""),
        "batch": str(batch),
        "pools": _fmt([0 if a == axis else len(strides) for a in range(3)]),
        "strides": _fmt(per_stage),
        "kernels": _fmt([[1 if a == axis else 3 for a in range(3)]] * len(per_stage)),
        "stages": str(len(features)),
        "convs": "one residual block (2 convs) per stage, encoder and decoder (DynUNet res_block)",
        "features": _fmt(features),
        "network": "MONAI DynUNet with residual blocks and SE (InstanceNorm, LeakyReLU)",
        "norm": ", ".join(plan.value(f"preprocess.normalise.per_sequence.{c}")["method"] for c in channels),
        "memory": f"{mem:.0f} MiB at batch {batch} (plan_rules.memory_mb, calibrated on CPU), budget {MEMORY_MB:g}",
        "batch_rule": _decision(plan, "segmentation.train.batch_size").rule,
        "batch_dice": "-",
        "cascade": cascade,
    }


ROWS = (
    ("spacing", "target spacing (mm)"),
    ("median", "median shape at target (cropped)"),
    ("patch", "patch size"),
    ("coverage", "patch / median image"),
    ("batch", "batch size"),
    ("batch_rule", "batch rule"),
    ("pools", "poolings per axis"),
    ("strides", "strides per stage"),
    ("kernels", "kernel sizes per stage"),
    ("stages", "stages"),
    ("convs", "convolutions per stage"),
    ("features", "features per stage"),
    ("network", "network"),
    ("memory", "memory estimate"),
    ("norm", "normalisation per channel"),
    ("batch_dice", "batch Dice"),
)


def config_table(nn: dict[str, str], mp: dict[str, str], mp_label: str) -> list[str]:
    """Markdown rows: quantity, nnU-Net, medpipe."""
    lines = [f"| | nnU-Net | medpipe ({mp_label}) |", "|---|---|---|"]
    lines += [f"| {label} | {nn.get(key, '-')} | {mp.get(key, '-')} |" for key, label in ROWS]
    return lines


def _label(plans: dict[str, Plan], arch: str) -> str:
    """Column label of the medpipe plan typed ``arch`` (the same network as plan: auto when auto chose ``arch``)."""
    auto = plans["auto"].value(ARCH)
    return f"`{arch}` = plan: auto" if auto == arch else f"architecture typed `{arch}`; plan: auto chose `{auto}`"


# ----------------------------------------------------------------------------------------------- report sections


def fingerprint_section(nn_fp: dict[str, Any], fp: DatasetFingerprint, tf: Sequence[int]) -> list[str]:
    """Both fingerprints side by side (nnU-Net's in medpipe's axis order)."""
    nn_sp = np.median(np.asarray(nn_fp["spacings"], dtype=np.float64), axis=0)
    nn_sh = np.median(np.asarray(nn_fp["shapes_after_crop"], dtype=np.float64), axis=0)
    ident = list(range(3))
    lines = [
        "## Fingerprints",
        "",
        "| | nnU-Net | medpipe |",
        "|---|---|---|",
        f"| cases | {len(nn_fp['spacings'])} | {len(fp.subjects)} |",
        f"| median spacing (mm) | {_fmt(to_medpipe_axes([_num(float(v)) for v in nn_sp], ident, '-'))} | "
        f"{_fmt([_num(float(v)) for v in np.median(fp.spacings, axis=0)])} |",
        f"| median shape after crop | {_fmt(to_medpipe_axes([_num(float(v)) for v in nn_sh], ident, '-'))} | "
        f"{_fmt([_num(float(v)) for v in np.median(fp.shapes_after_crop, axis=0)])} |",
        f"| median relative size after crop | {nn_fp['median_relative_size_after_cropping']:.3f} | "
        f"{np.median(np.prod(fp.shapes_after_crop, 1) / np.prod(fp.shapes, 1)):.3f} |",
    ]
    for c, stats in enumerate(fp.intensities):
        nn = nn_fp["foreground_intensity_properties_per_channel"][str(c)]
        for key, mine in (("mean", "mean"), ("std", "sd"), ("percentile_00_5", "percentile_00_5")):
            lines.append(f"| {stats.channel} foreground {key} | {nn[key]:.1f} | {getattr(stats, mine):.1f} |")
        p995 = f"{nn['percentile_99_5']:.1f} | {stats.percentile_99_5:.1f}"
        lines.append(f"| {stats.channel} foreground percentile_99_5 | {p995} |")
    lines += [
        "",
        "nnU-Net's axes are SimpleITK's (k, j, i), shown here and below in medpipe's array order (NIfTI i, j, k); its "
        f"plans transpose them by `transpose_forward` {list(tf)} (largest spacing first). Foreground intensities: "
        "nnU-Net draws 10^8 / cases voxels per case at random with replacement (every case weighs the "
        "same, however small its lesion), medpipe takes up to 10,000 evenly spaced voxels per case, all of them when "
        "fewer (a case weighs by its lesion size below that), so the pooled statistics differ when lesions are small "
        f"(median lesion here: {int(np.median([s.class_voxels[0] for s in fp.subjects]))} voxels).",
        "",
    ]
    return lines


def choice_section(plans: dict[str, Any], mp: dict[str, Plan], cohort: Cohort) -> list[str]:
    """What each planner would train."""
    configs = [c for c in plans["configurations"] if c in NNUNET_CONFIGS]
    cascade = "3d_cascade_fullres" in plans["configurations"]
    auto = _decision(mp["auto"], ARCH)
    trains = ", ".join(configs) + (" + 3d_cascade_fullres (after 3d_lowres)" if cascade else "")
    return [
        "## What each planner would train",
        "",
        "| | configurations | how the final one is chosen |",
        "|---|---|---|",
        f"| nnU-Net | {trains} | all trained (5 folds each); `nnUNetv2_find_best_configuration` picks the best "
        "cross-validated one or an ensemble of two |",
        f"| medpipe | one: `{auto.value}` | rule: {_fmt(auto.rule)} |",
        "",
        f"nnU-Net planned 3d_lowres: **{'yes' if '3d_lowres' in plans['configurations'] else 'no'}**; medpipe's "
        f"plan: auto is **{auto.value}**"
        + (
            f" (coarse_factor {mp['auto'].value('segmentation.model.cascade.coarse_factor')})"
            if auto.value == "cascade"
            else ""
        )
        + f". Normalisation: nnU-Net maps the channel names {list(cohort.channels)} to a scheme (`CT` -> "
        "CTNormalization, else ZScoreNormalization); medpipe maps the modalities "
        f"{list(cohort.modalities)} (CT -> ct_foreground, else zscore).",
        "",
    ]


def _medpipe_memory_at(patch: Sequence[int], spacing: Sequence[float], dims: int) -> tuple[float, list[int]]:
    """medpipe's memory estimate (MiB, batch 2) of its own network sized for ``patch`` (3 entries) and filters."""
    axes = [int(p) for p in patch[:dims]]
    props = rules.pool_and_conv_props(spacing[:dims], axes)
    trailing = [len(bin(p)) - len(bin(p).rstrip("0")) for p in axes]
    depth = max(2, min(*props.num_pool_per_axis, *trailing))
    features = list(rules.unet_features(8, depth, dims))
    return rules.memory_mb([*axes, 1] if dims == 2 else axes, rules.MIN_BATCH, features, dims), features


def _memory_verdict(nn_patch: Sequence[int], plan: Plan, mem: float) -> str:
    """What the memory estimate at nnU-Net's patch says about medpipe's patch."""
    median = plan.inputs["median_shape_at_target"]
    mine = plan.value("segmentation.train.patch_size")
    if all(p >= m for p, m in zip(nn_patch, median, strict=True)):
        return "both patches are the whole median image padded to the pooling; memory limits neither."
    if mem <= MEMORY_MB:
        return f"it fits, so medpipe's search stops at a patch at least as large ({mine})."
    return f"it does not fit, so medpipe's search shrinks further ({mine})."


def why_section(nn: dict[str, dict[str, Any]], mp: dict[str, Plan], tf: Sequence[int]) -> list[str]:
    """Why the values differ, with this cohort's numbers."""
    lines = ["## Why they differ", ""]
    full, p3 = nn["configs"].get("3d_fullres"), mp["unet3d"]
    sp3 = [float(v) for v in p3.value("preprocess.target_spacing_mm")]
    if full is not None:
        nn_sp = to_medpipe_axes([float(v) for v in full["spacing"]], tf, 0.0)
        same = np.allclose(nn_sp, sp3, atol=1e-4)
        lines.append(
            f"* **Target spacing**: the same rule (`plan_rules.target_spacing` is nnU-Net's "
            f"`determine_fullres_target_spacing`): nnU-Net {[round(v, 4) for v in nn_sp]} mm, medpipe "
            f"{[round(v, 4) for v in sp3]} mm ({'identical' if same else 'different'}). "
            f"medpipe's reason: {_decision(p3, 'preprocess.target_spacing_mm').rule}."
        )
        nn_patch = to_medpipe_axes([int(v) for v in full["patch_size"]], tf, 1)
        mem, feats = _medpipe_memory_at(nn_patch, sp3, 3)
        lines.append(
            f"* **3D depth**: nnU-Net pools each axis on its own (3d_fullres strides per stage "
            f"{nn['rows']['3d_fullres']['strides']}, i.e. {nn['rows']['3d_fullres']['pools']} poolings per axis, "
            "kernel 1 on an axis whose spacing is still >= 2x the finest). medpipe's `segmentation.model.strides` is "
            "one stride for every axis, so its depth is the smallest per-axis count (and never below DynUNet's 2): "
            f"{_decision(p3, 'segmentation.model.strides').rule}. Its kernels are 3 on every axis."
        )
        lines.append(
            f"* **Memory model and filters**: nnU-Net instantiates its PlainConvUNet (32 filters doubling to 320, two "
            "convolutions per stage) and compares the summed feature-map size with a reference measured on a GPU at "
            "8 GB (560 M elements at batch 2 in 3D, 85 M at batch 12 in 2D). medpipe uses a formula calibrated on "
            "CPU, float32, for its DynUNet with residual blocks and SE, whose filters start at 8 (the schema default) "
            "and double per level: a quarter of nnU-Net's filters on each level up to nnU-Net's cap (320 in 3D, "
            "512 in 2D), so fewer activations per voxel at the same depth. "
            f"At nnU-Net's 3d_fullres patch {nn_patch}, medpipe's network (filters {feats}) is estimated at "
            f"{mem:.0f} MiB at batch 2 of {MEMORY_MB:g}: " + _memory_verdict(nn_patch, p3, mem)
        )
    lines += _batch_and_2d_lines(nn, mp)
    lines += [
        "* **2D or 3D**: nnU-Net plans every configuration and lets cross-validation decide; medpipe plans one by "
        f"its flowchart rules: {_decision(mp['auto'], ARCH).rule}.",
        "* **Cascade**: nnU-Net adds 3d_lowres when the 3d_fullres patch holds < 25 % of the median image, raising "
        "the spacing 3 % a step until the lowres patch holds 25 % of the lowres median image (dropped when that "
        "image is not at least 2x smaller). medpipe uses the same 25 % test, but its coarse stage sees the whole "
        "image downsampled by `cascade.coarse_factor` and its fine patch is re-planned with half the budget.",
        "* **Normalisation**: both z-score non-CT channels. nnU-Net restricts the statistics to the nonzero mask "
        "(`use_mask_for_norm`) only when cropping to the nonzero box leaves < 75 % of the median image; medpipe's "
        "zscore takes mean and SD inside the pipeline's mask (`preprocess.normalise`) and has no such flag.",
        "",
    ]
    return lines


def _batch_and_2d_lines(nn: dict[str, dict[str, Any]], mp: dict[str, Plan]) -> list[str]:
    """Bullets on the batch rule and the 2D patch."""
    lines = [
        "* **Batch**: both cap a batch at 5 % of the dataset's voxels and take at least 2; the memory part differs "
        "(nnU-Net: round(reference / estimate x reference batch); medpipe: what its linear formula fits). "
        + "; ".join(
            f"{cfg}: nnU-Net {nn['rows'][cfg]['batch_rule']} -> {nn['rows'][cfg]['batch']}, medpipe "
            f"{_decision(mp[arch], BATCH).rule} -> {mp[arch].value(BATCH)}"
            for cfg, arch in (("3d_fullres", "unet3d"), ("2d", "unet2d"))
            if cfg in nn["rows"]
        )
        + "."
    ]
    if "2d" in nn["rows"]:
        lines.append(
            "* **2D patch**: nnU-Net starts from 2048^2 pixels clipped to the median slice and pads to its pooling; "
            "medpipe follows the same search and also pads to a multiple of 4 (DynUNet's two poolings) where nnU-Net "
            f"pools less. nnU-Net {nn['rows']['2d']['patch']} with {nn['rows']['2d']['features']} features, "
            f"medpipe {mp['unet2d'].value('segmentation.train.patch_size')} with "
            f"{mp['unet2d'].value('segmentation.model.channels')}."
        )
    return lines


def _agreement(theirs: dict[str, str], mine: dict[str, str], cfg: str) -> str:
    """Which of the comparable rows agree."""
    keys: tuple[str, ...] = ("patch", "batch", "pools", "strides", "kernels", "stages", "features")
    keys = ("spacing", "median", *keys) if cfg != "2d" else keys
    same = [label for key, label in ROWS if key in keys and theirs.get(key) == mine.get(key)]
    differ = [label for key, label in ROWS if key in keys and theirs.get(key) != mine.get(key)]
    return f"Same in both: {', '.join(same) or 'none'}. Different: {', '.join(differ) or 'none'}."


def _config_sections(nn: dict[str, dict[str, Any]], mp: dict[str, Plan], cohort: Cohort) -> list[str]:
    """One table per nnU-Net configuration beside medpipe's counterpart."""
    lines: list[str] = []
    pairs = (("3d_fullres", "unet3d"), ("2d", "unet2d"), ("3d_lowres", "cascade"))
    cascade = "3d_lowres" in nn["rows"] or mp["auto"].value(ARCH) == "cascade" or _coverage(mp["unet3d"]) < 0.25
    for cfg, arch in pairs:
        if arch == "cascade" and not cascade:
            lines += [
                "No 3d_lowres from nnU-Net and no cascade from medpipe (the 3D patch holds >= 25 % of the median "
                "image).",
                "",
            ]
            continue
        lines += [f"## {cfg} beside medpipe `{arch}`", ""]
        mine = medpipe_rows(mp[arch], cohort.channels) if arch in mp else {}
        label = _label(mp, arch) if arch in mp else "not planned"
        theirs = nn["rows"].get(cfg, {})
        if cfg == "3d_lowres":
            theirs = theirs or dict.fromkeys(("spacing", "patch"), "not planned")
            nxt = "3d_cascade_fullres" if theirs.get("batch") else "-"
            lines += [*config_table(theirs, mine, label), f"| cascade | {nxt} | {mine.get('cascade', '-')} |"]
        else:
            lines += config_table(theirs, mine, label)
        if arch in mp:
            lines += ["", f"medpipe's architecture rule: {_fmt(_decision(mp[arch], ARCH).rule)}."]
            lines += ["", _agreement(theirs, mine, cfg)] if cfg in nn["rows"] else []
        lines.append("")
    return lines


def write_report(
    args: argparse.Namespace, cohort: Cohort, nn: dict[str, Any], mp: dict[str, Plan], fp: DatasetFingerprint
) -> None:
    """The markdown page and the two plan files beside it."""
    est = nn["estimates"]
    tf = nn["plans"]["transpose_forward"]
    out = Path(args.out)
    stem = out.with_suffix("")
    lines = [
        f"# Planning: medpipe beside nnU-Net v2 ({cohort.name})",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {platform.machine()} CPU, {os.cpu_count()} cores, no GPU "
        f"(planning only: no preprocessing, no training). nnU-Net: nnunetv2 {est['version']}, ExperimentPlanner "
        f"(default `nnUNetPlans`, {est['target_gb']:g} GB target), torch {est['torch']}; steps "
        f"`nnUNetv2_extract_fingerprint -d {cohort.dataset_id} -np 1 --verify_dataset_integrity`, "
        f"`nnUNetv2_plan_experiment -d {cohort.dataset_id}`. medpipe: `compute_dataset_fingerprint` + "
        f"`make_plan(fingerprint, budget=Budget(memory_mb={MEMORY_MB:g}))` (torch {torch.__version__}).",
        "",
        f"Cohort: {cohort.description}. Channels {list(cohort.channels)}, modalities {list(cohort.modalities)}; "
        f"labels background 0, lesion 1. Both planners read the same files (nnU-Net through symbolic links).",
        "",
    ]
    lines += [f"* {n}" for n in cohort.notes] + ([""] if cohort.notes else [])
    lines += [
        f"Files: `{stem.name}_nnUNetPlans.json` (nnU-Net's plans, its own axis order), `{stem.name}_medpipe_plan.json` "
        "(medpipe's plan: auto). In the tables, per-axis values are in medpipe's array order (NIfTI i, j, k).",
        "",
    ]
    lines += choice_section(nn["plans"], mp, cohort)
    lines += fingerprint_section(nn["fingerprint"], fp, tf)
    lines += _config_sections(nn, mp, cohort)
    lines += why_section(nn, mp, tf)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    shutil.copyfile(nn["plans_file"], f"{stem}_nnUNetPlans.json")
    Path(f"{stem}_medpipe_plan.json").write_text(mp["auto"].to_json())
    logger.info("wrote %s and the two plan files beside it", out)


def _nnunet_summary(plans: dict[str, Any], est: dict[str, Any], n_cases: int) -> dict[str, dict[str, Any]]:
    """Display rows per nnU-Net configuration."""
    tf = plans["transpose_forward"]
    confs = plans["configurations"]
    base = confs.get("3d_fullres", confs["2d"])
    vox3 = float(np.prod(base["median_image_size_in_voxels"])) * n_cases
    rows = {}
    for name in NNUNET_CONFIGS:
        if name in confs:
            vox = vox3 if name != "3d_lowres" else float(np.prod(confs[name]["median_image_size_in_voxels"])) * n_cases
            rows[name] = nnunet_rows(confs[name], tf, est, name, vox)
    return {"rows": rows, "configs": {k: v for k, v in confs.items() if k in NNUNET_CONFIGS}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", choices=["sts", "demo"], required=True)
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/plan_nnunet_<cohort>.md")
    ap.add_argument("--nnunet-python", type=Path, default=Path("/work/nnunet-venv/bin/python"))
    ap.add_argument("--sts-data", type=Path, default=REPO.parent / "shared" / "data" / "ibsi_sts" / "nifti")
    ap.add_argument("--demo-results", type=Path, default=Path("/tmp/plantest/results"))
    ap.add_argument("--workdir", type=Path, help="nnU-Net's folders and logs (default: a temporary folder)")
    args = ap.parse_args(argv)
    args.out = args.out or REPO / "benchmarks" / "results" / f"plan_nnunet_{args.cohort}.md"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="plan_nnunet_") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        cohort = sts_cohort(args.sts_data, work) if args.cohort == "sts" else demo_cohort(args.demo_results, work)
        logger.info("%s: %d cases; %s", cohort.name, len(cohort.cases), "; ".join(cohort.notes) or "no notes")
        fp, mp = medpipe_plans(cohort)
        fingerprint, plans, est = run_nnunet(args.nnunet_python, cohort, work)
        nn = {
            "fingerprint": fingerprint,
            "plans": plans,
            "estimates": est,
            "plans_file": work / "nnUNetPlans.json",
            **_nnunet_summary(plans, est, len(cohort.cases)),
        }
        write_report(args, cohort, nn, mp, fp)


if __name__ == "__main__":
    main()
