"""Inference: sliding windows with Gaussian blending, mirror TTA, fold ensembles and uncertainty.

Each *member* of the ensemble is one (model, mirror) pair; its softmax map comes from MONAI
:func:`~monai.inferers.sliding_window_inference` (``mode="gaussian"``, configurable ``overlap``).
The prediction is the argmax of the mean probability. Uncertainty per voxel is the entropy of the
mean probability divided by ``log(classes)`` (0 = certain, 1 = uniform); the per-case score is
its mean over the voxels any member calls foreground, and the case is flagged for review when the
score exceeds ``infer.uncertainty_threshold``, when the members' masks agree less than
``infer.min_agreement`` (mean Dice to the consensus), or when nothing is found.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers import sliding_window_inference

from medpipe.core.errors import DataError, MedpipeError
from medpipe.core.io import atomic_path, save_like
from medpipe.core.sidecar import write_json, write_sidecar
from medpipe.segment import cascade
from medpipe.segment.data import load_image_stack
from medpipe.segment.model import build_network, divisor
from medpipe.segment.settings import resolve_settings

logger = logging.getLogger(__name__)

MODEL_FORMAT = "medpipe-seg-1"
SEG_PACKAGES = ("torch", "monai")


@dataclass
class SegModel:
    """A trained model: its networks (``fine``, plus ``coarse`` for a cascade) and metadata."""

    nets: dict[str, torch.nn.Module]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """Segmentation settings the model was trained with."""
        return dict(self.meta["settings"])


def pick_device(prefer_cuda: bool = True) -> torch.device:
    """CUDA when available (and wanted), otherwise CPU."""
    return torch.device("cuda" if prefer_cuda and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 (or fp16) autocast on CUDA; a no-op context on CPU."""
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def build_nets(settings: Mapping[str, Any], in_channels: int) -> dict[str, torch.nn.Module]:
    """Networks of the configured architecture (``fine``; ``coarse`` too for a cascade)."""
    model = settings["model"]
    n_classes = int(settings["num_classes"])
    nets = {"fine": build_network(model, in_channels, n_classes)}
    if model["architecture"] == "cascade":
        nets["coarse"] = build_network(model, in_channels, n_classes)
    return nets


def save_model(path: str | Path, nets: Mapping[str, torch.nn.Module], meta: Mapping[str, Any]) -> Path:
    """Write networks + metadata atomically as one torch file (loadable with ``weights_only=True``)."""
    payload = {
        "format": MODEL_FORMAT,
        "meta": dict(meta),
        "state": {name: net.state_dict() for name, net in nets.items()},
    }
    # Through a file handle: torch.save(payload, tmp) would record the random temporary name inside
    # the zip archive and the file would differ on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load_model(path: str | Path, device: torch.device | None = None, *, subject: str | None = None) -> SegModel:
    """Read a model written by :func:`save_model`, rebuilt on ``device`` in evaluation mode."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise MedpipeError(f"cannot read model file: {exc}", subject=subject, path=path) from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise MedpipeError(
            f"not a medpipe segmentation model (expected format {MODEL_FORMAT})", subject=subject, path=path
        )
    meta = payload["meta"]
    nets = build_nets(meta["settings"], int(meta["in_channels"]))
    for name, net in nets.items():
        net.load_state_dict(payload["state"][name])
        net.to(device or torch.device("cpu")).eval()
    return SegModel(nets, meta)


def mirror_axes(architecture: str, tta: bool) -> list[tuple[int, ...]]:
    """Spatial axes flipped by each TTA member (``()`` = identity); slice-wise nets flip in-plane only."""
    if not tta:
        return [()]
    axes = (0, 1) if architecture == "unet2d" else (0, 1, 2)
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def sliding_probabilities(
    net: torch.nn.Module,
    image: torch.Tensor,
    settings: Mapping[str, Any],
    flip: tuple[int, ...] = (),
    amp: bool = False,
) -> torch.Tensor:
    """Softmax ``(1, K, X, Y, Z)`` of ``net`` on ``image`` ``(1, C, X, Y, Z)`` by Gaussian sliding windows."""
    infer = settings["infer"]
    dims = [a + 2 for a in flip]
    x = torch.flip(image, dims) if dims else image
    with autocast(image.device, amp):
        logits = sliding_window_inference(
            x,
            roi_size=[int(p) for p in settings["train"]["patch_size"]],
            sw_batch_size=int(infer["sw_batch_size"]),
            predictor=net,
            overlap=float(infer["overlap"]),
            mode=str(infer["mode"]),
        )
    probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)
    return torch.flip(probs, dims) if dims else probs


@torch.no_grad()
def model_members(
    model: SegModel, image: torch.Tensor, infer: Mapping[str, Any], amp: bool = False
) -> list[torch.Tensor]:
    """Probability maps ``(1, K, X, Y, Z)`` of every mirror of one model (cascade handled)."""
    settings = {**model.settings, "infer": {**model.settings["infer"], **dict(infer)}}
    arch = settings["model"]["architecture"]
    flips = mirror_axes(arch, bool(settings["infer"]["tta"]))
    fine = model.nets["fine"]
    if arch != "cascade":
        return [sliding_probabilities(fine, image, settings, f, amp) for f in flips]
    casc = settings["model"]["cascade"]
    coarse = cascade.coarse_probabilities(
        model.nets["coarse"], image, int(casc["coarse_factor"]), divisor(settings["model"])
    )
    roi = cascade.roi_from_probabilities(coarse, int(casc["margin_vox"]))
    if roi is None:
        logger.warning("cascade: the coarse stage found no foreground; the fine stage runs on the whole image")
        roi = (slice(None), slice(None), slice(None))
    logger.info("cascade region of interest: %s", [(s.start, s.stop) for s in roi])
    crop = image[:, :, roi[0], roi[1], roi[2]]
    n_classes = int(settings["num_classes"])
    return [
        cascade.paste(image.shape[2:], n_classes, roi, sliding_probabilities(fine, crop, settings, f, amp))
        for f in flips
    ]


def uncertainty_summary(
    mean_probs: npt.NDArray[np.float32],
    member_fg: Sequence[npt.NDArray[np.bool_]],
    infer: Mapping[str, Any],
    spacing: Sequence[float],
) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
    """Voxel-wise normalised entropy and the per-case score / review flag (see module docstring)."""
    k = mean_probs.shape[0]
    p = np.clip(mean_probs, 1e-8, 1.0)
    entropy = (-(p * np.log(p)).sum(axis=0) / np.log(k)).astype(np.float32)
    consensus = mean_probs.argmax(axis=0) > 0
    union = np.logical_or.reduce(list(member_fg)) if member_fg else consensus
    score = float(entropy[union].mean()) if union.any() else 0.0
    dices = []
    for fg in member_fg:
        denom = int(fg.sum()) + int(consensus.sum())
        dices.append(1.0 if denom == 0 else 2.0 * float(np.logical_and(fg, consensus).sum()) / denom)
    agreement = float(np.mean(dices)) if dices else 1.0
    reasons = []
    if score > float(infer["uncertainty_threshold"]):
        reasons.append(f"mean uncertainty {score:.3f} > {infer['uncertainty_threshold']}")
    if agreement < float(infer["min_agreement"]):
        reasons.append(f"ensemble agreement (Dice) {agreement:.3f} < {infer['min_agreement']}")
    if not consensus.any():
        reasons.append("no foreground predicted")
    summary = {
        "uncertainty_score": round(score, 6),
        "member_agreement_dice": round(agreement, 6),
        "n_members": len(member_fg),
        "predicted_volume_mm3": round(float(consensus.sum()) * float(np.prod(spacing)), 3),
        "flag_for_review": bool(reasons),
        "reasons": reasons,
    }
    return entropy, summary


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
        JSON with the uncertainty score, ensemble agreement and the review flag.
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
    """
    if threads:
        torch.set_num_threads(int(threads))
    infer = resolve_settings(settings)["infer"]
    paths = [model] if isinstance(model, str | Path) else list(model)
    device = pick_device()
    data, geom = load_image_stack(list(images), subject=subject)
    image = torch.from_numpy(data)[None].to(device)
    sum_probs: torch.Tensor | None = None
    member_fg: list[npt.NDArray[np.bool_]] = []
    n_classes = 0
    for path in paths:
        seg = load_model(path, device, subject=subject)
        n_in, n_classes = int(seg.meta["in_channels"]), int(seg.settings["num_classes"])
        if data.shape[0] != n_in:
            raise DataError(
                f"{data.shape[0]} input images given but model {Path(path).name} was trained on "
                f"{n_in} channels {seg.meta.get('sequences', '')}",
                subject=subject,
                path=images[0],
            )
        amp = bool(seg.settings["train"].get("amp", True))
        for probs in model_members(seg, image, infer, amp):
            sum_probs = probs if sum_probs is None else sum_probs + probs
            member_fg.append((probs[0].argmax(dim=0) > 0).cpu().numpy())
    if sum_probs is None:
        raise MedpipeError("no model given", subject=subject)
    mean_probs = (sum_probs[0] / len(member_fg)).cpu().numpy().astype(np.float32)
    pred = mean_probs.argmax(axis=0).astype(np.uint8)
    entropy, summary = uncertainty_summary(mean_probs, member_fg, infer, geom.spacing)
    params = {"infer": infer, "models": [Path(p).parent.name + "/" + Path(p).name for p in paths]}
    save_like(np.moveaxis(mean_probs, 0, -1), geom, out_prob, dtype=np.float32)
    write_sidecar(
        out_prob,
        stage="predict",
        subject=subject,
        inputs=[*images, *paths],
        parameters=params,
        geometry=geom,
        packages=SEG_PACKAGES,
        extra={"classes": list(range(n_classes))},
    )
    save_like(pred, geom, out_pred, dtype=np.uint8)
    write_sidecar(
        out_pred,
        stage="predict",
        subject=subject,
        inputs=[*images, *paths],
        parameters=params,
        geometry=geom,
        packages=SEG_PACKAGES,
    )
    if out_uncertainty_map is not None:
        save_like(entropy, geom, out_uncertainty_map, dtype=np.float32)
        write_sidecar(
            out_uncertainty_map,
            stage="predict",
            subject=subject,
            inputs=[*images, *paths],
            parameters=params,
            geometry=geom,
            packages=SEG_PACKAGES,
        )
    write_json({"subject": subject, **summary}, out_uncertainty)
    if out_qc is not None:
        from medpipe.core.qc import save_overlay

        flag = ", flagged for review" if summary["flag_for_review"] else ""
        save_overlay(
            data[0],
            {"automatic": pred > 0, "uncertain": entropy > 0.5},
            out_qc,
            spacing=geom.spacing,
            title=f"sub-{subject}: prediction, uncertainty {summary['uncertainty_score']:.3f}{flag}",
        )
    logger.info(
        "subject %s: %d members, foreground %.0f mm3, uncertainty %.3f%s",
        subject,
        summary["n_members"],
        summary["predicted_volume_mm3"],
        summary["uncertainty_score"],
        " -> flagged for review" if summary["flag_for_review"] else "",
    )
    return Path(out_pred)
