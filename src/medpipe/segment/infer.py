"""Inference: fold ensembles, prediction files and the per-case uncertainty record.

Each *member* of the ensemble is one (model, mirror) pair; its softmax map comes from
:func:`medpipe.segment.sliding.model_members` (Gaussian sliding windows, mirror TTA, cascade).
The prediction is the argmax of the mean probability. Uncertainty per voxel is the entropy of the
mean probability divided by ``log(classes)`` (0 = certain, 1 = uniform); the per-case score is
its mean over the voxels any member calls foreground, and the case is flagged for review when the
score exceeds ``infer.uncertainty_threshold``, when the members' masks agree less than
``infer.min_agreement`` (mean Dice to the consensus), or when nothing is found. The verdict is
written as a :class:`medpipe.core.records.UncertaintyRecord`, the record the review list reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medpipe.core.errors import DataError, MedpipeError
from medpipe.core.geometry import Geometry
from medpipe.core.io import save_like
from medpipe.core.overlap import dice_score
from medpipe.core.records import UncertaintyRecord, write_uncertainty
from medpipe.core.sidecar import write_sidecar
from medpipe.segment.data import load_image_stack
from medpipe.segment.intensity import apply_to_stack
from medpipe.segment.model import SEG_PACKAGES, SegModel, load_model, pick_device
from medpipe.segment.settings import resolve_settings
from medpipe.segment.sliding import model_members

logger = logging.getLogger(__name__)

#: An image to write: array, file dtype and the extra facts of its sidecar.
_Map = tuple[npt.NDArray[Any], type[np.generic], dict[str, Any] | None]


def uncertainty_summary(
    mean_probs: npt.NDArray[np.float32],
    member_fg: Sequence[npt.NDArray[np.bool_]],
    infer: Mapping[str, Any],
    spacing: Sequence[float],
    *,
    subject: str,
) -> tuple[npt.NDArray[np.float32], UncertaintyRecord]:
    """Voxel-wise normalised entropy and the per-case uncertainty record (see module docstring).

    Parameters
    ----------
    mean_probs
        Mean probability ``(K, X, Y, Z)`` over the members.
    member_fg
        Foreground mask ``(X, Y, Z)`` of every member.
    infer
        ``segmentation.infer`` (``uncertainty_threshold``, ``min_agreement``).
    spacing
        Voxel size (mm), for the predicted volume.
    subject
        Subject ID recorded in the record.

    Returns
    -------
    entropy : numpy.ndarray
        Normalised entropy ``(X, Y, Z)``, float32 in [0, 1].
    record : medpipe.core.records.UncertaintyRecord
        Score, agreement, flag and reasons.
    """
    k = mean_probs.shape[0]
    p = np.clip(mean_probs, 1e-8, 1.0)
    entropy = (-(p * np.log(p)).sum(axis=0) / np.log(k)).astype(np.float32)
    consensus = mean_probs.argmax(axis=0) > 0
    union = np.logical_or.reduce(list(member_fg)) if member_fg else consensus
    score = float(entropy[union].mean()) if union.any() else 0.0
    dices = [dice_score(fg, consensus) for fg in member_fg]
    agreement = float(np.mean(dices)) if dices else 1.0
    reasons = []
    if score > float(infer["uncertainty_threshold"]):
        reasons.append(f"mean uncertainty {score:.3f} > {infer['uncertainty_threshold']}")
    if agreement < float(infer["min_agreement"]):
        reasons.append(f"ensemble agreement (Dice) {agreement:.3f} < {infer['min_agreement']}")
    if not consensus.any():
        reasons.append("no foreground predicted")
    record = UncertaintyRecord(
        subject=subject,
        score=round(score, 6),
        threshold=float(infer["uncertainty_threshold"]),
        flag=bool(reasons),
        reasons=tuple(reasons),
        agreement=round(agreement, 6),
        min_agreement=float(infer["min_agreement"]),
        n_members=len(member_fg),
        predicted_volume_mm3=round(float(consensus.sum()) * float(np.prod(spacing)), 3),
    )
    return entropy, record


@dataclass
class _Ensemble:
    """Mean probability of every member of every model, and each member's foreground."""

    mean_probs: npt.NDArray[np.float32]
    member_fg: list[npt.NDArray[np.bool_]]
    n_classes: int


def _check_channels(seg: SegModel, n_images: int, model_path: str | Path, images: Sequence[str], subject: str) -> None:
    """Raise :class:`DataError` unless the case has as many images as the model has input channels."""
    n_in = int(seg.meta["in_channels"])
    if n_images != n_in:
        raise DataError(
            f"{n_images} input images given but model {Path(model_path).name} was trained on "
            f"{n_in} channels {seg.meta.get('sequences', '')}",
            subject=subject,
            path=images[0],
        )


def _model_input(seg: SegModel, image: torch.Tensor) -> torch.Tensor:
    """The case as this model's input: its fold's stored ct_foreground statistics applied (others unchanged)."""
    records = seg.meta.get("input_normalisation") or []
    if not records:
        return image
    stack = apply_to_stack(image[0].cpu().numpy(), records)
    return torch.from_numpy(stack)[None].to(image.device)


def _ensemble(
    paths: Sequence[str | Path],
    image: torch.Tensor,
    infer: Mapping[str, Any],
    *,
    images: Sequence[str],
    subject: str,
) -> _Ensemble:
    """Run every model of ``paths`` (all mirrors each) on ``image`` and average the probabilities.

    Parameters
    ----------
    paths
        ``model.pt`` files (one or an ensemble of folds).
    image
        The case ``(1, C, X, Y, Z)`` on the device the models are loaded on.
    infer
        ``segmentation.infer`` of the run (overrides the models' own).
    images, subject
        The case's image files and subject ID (error messages).

    Returns
    -------
    _Ensemble
        Mean probability ``(K, X, Y, Z)`` (float32, on the CPU) and the members' foreground masks.
    """
    sum_probs: torch.Tensor | None = None
    member_fg: list[npt.NDArray[np.bool_]] = []
    n_classes = 0
    for path in paths:
        seg = load_model(path, image.device, subject=subject)
        _check_channels(seg, int(image.shape[1]), path, images, subject)
        n_classes = int(seg.settings["num_classes"])
        amp = bool(seg.settings["train"].get("amp", True))
        for probs in model_members(seg, _model_input(seg, image), infer, amp):
            sum_probs = probs if sum_probs is None else sum_probs + probs
            member_fg.append((probs[0].argmax(dim=0) > 0).cpu().numpy())
    if sum_probs is None:
        raise MedpipeError("no model given", subject=subject)
    mean_probs = (sum_probs[0] / len(member_fg)).cpu().numpy().astype(np.float32)
    return _Ensemble(mean_probs, member_fg, n_classes)


def _write_maps(
    maps: Mapping[Path, _Map],
    geom: Geometry,
    *,
    subject: str,
    inputs: Sequence[str | Path],
    params: Mapping[str, Any],
) -> None:
    """Write each image of ``maps`` (path -> (array, dtype, sidecar extra)) on ``geom`` with its sidecar."""
    for path, (array, dtype, extra) in maps.items():
        save_like(array, geom, path, dtype=dtype)
        write_sidecar(
            path,
            stage="predict",
            subject=subject,
            inputs=list(inputs),
            parameters=dict(params),
            geometry=geom,
            packages=SEG_PACKAGES,
            extra=extra,
        )


def _write_qc(
    first_channel: npt.NDArray[np.float32],
    pred: npt.NDArray[np.uint8],
    entropy: npt.NDArray[np.float32],
    record: UncertaintyRecord,
    geom: Geometry,
    out_qc: str | Path,
) -> None:
    """PNG of the first channel with the predicted mask and the uncertain voxels (entropy > 0.5)."""
    from medpipe.core.qc import save_overlay

    flag = ", flagged for review" if record.flag else ""
    save_overlay(
        first_channel,
        {"automatic": pred > 0, "uncertain": entropy > 0.5},
        out_qc,
        spacing=geom.spacing,
        title=f"sub-{record.subject}: prediction, uncertainty {record.score:.3f}{flag}",
    )


def predict_case(
    images: Sequence[str],
    model: str | Sequence[str],
    out_prob: str | Path,
    out_pred: str | Path,
    out_uncertainty: str | Path,
    *,
    subject: str,
    settings: Mapping[str, Any] | None = None,
    out_uncertainty_map: str | Path | None = None,
    out_qc: str | Path | None = None,
    threads: int | None = None,
) -> Path:
    """Segment one case with one model or an ensemble of fold models.

    Parameters
    ----------
    images
        The subject's normalised images, one per channel, in the training sequence order.
    model
        One ``model.pt`` or several (ensemble: probabilities averaged).
    out_prob, out_pred
        Softmax probabilities (4D, float32, last axis = class) and argmax labels (uint8), on the
        input grid, each with a sidecar.
    out_uncertainty
        The :class:`medpipe.core.records.UncertaintyRecord` (JSON): uncertainty score, ensemble
        agreement, the review flag and its reasons.
    subject
        Subject ID (messages and sidecars).
    settings
        ``config["segmentation"]``; only its ``infer`` section is used (the rest comes from the model).
    out_uncertainty_map
        Optional NIfTI of the voxel-wise normalised entropy.
    out_qc
        Optional PNG: first channel with the predicted mask and the uncertain voxels (entropy > 0.5).
    threads
        CPU threads for torch.

    Returns
    -------
    pathlib.Path
        ``out_pred``.
    """
    if threads:
        torch.set_num_threads(int(threads))
    infer = resolve_settings(settings)["infer"]
    paths = [model] if isinstance(model, str | Path) else list(model)
    data, geom = load_image_stack(list(images), subject=subject)
    image = torch.from_numpy(data)[None].to(pick_device())
    ens = _ensemble(paths, image, infer, images=images, subject=subject)
    pred = ens.mean_probs.argmax(axis=0).astype(np.uint8)
    entropy, record = uncertainty_summary(ens.mean_probs, ens.member_fg, infer, geom.spacing, subject=subject)
    maps: dict[Path, _Map] = {
        Path(out_prob): (np.moveaxis(ens.mean_probs, 0, -1), np.float32, {"classes": list(range(ens.n_classes))}),
        Path(out_pred): (pred, np.uint8, None),
    }
    if out_uncertainty_map is not None:
        maps[Path(out_uncertainty_map)] = (entropy, np.float32, None)
    params = {"infer": infer, "models": [Path(p).parent.name + "/" + Path(p).name for p in paths]}
    _write_maps(maps, geom, subject=subject, inputs=[*images, *paths], params=params)
    write_uncertainty(record, out_uncertainty)
    if out_qc is not None:
        _write_qc(data[0], pred, entropy, record, geom, out_qc)
    logger.info(
        "subject %s: %d members, foreground %.0f mm3, uncertainty %.3f%s",
        subject,
        record.n_members,
        record.predicted_volume_mm3,
        record.score,
        " -> flagged for review" if record.flag else "",
    )
    return Path(out_pred)
