"""Training of one cross-validation fold: seeded, checkpointed every epoch, resumable, AMP on CUDA.

Reproducibility: every epoch re-seeds torch, NumPy and the MONAI transforms from ``(seed, epoch)``,
so an epoch depends only on the weights and optimiser state at its start. Those are written to
``checkpoint.pt`` beside the model after every epoch; a crashed run restarted with the same inputs
and settings resumes there and ends with bit-identical weights on CPU (oneDNN kernels are
reproducible for a fixed thread count; torch's deterministic-algorithm switch is used on CUDA only,
because on CPU it swaps in reference kernels that are about ten times slower).
The checkpoint is deliberately not a Snakemake output (Snakemake deletes the outputs of a failed
job, which would defeat the resume); it is removed when training completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.core.determinism import seed_everything
from medpipe.core.errors import ConfigError, MedpipeError
from medpipe.core.io import atomic_path
from medpipe.core.sidecar import write_sidecar
from medpipe.segment import cascade
from medpipe.segment.curve import write_curve
from medpipe.segment.data import Case, load_cases, patch_dataset
from medpipe.segment.infer import (
    SEG_PACKAGES,
    SegModel,
    autocast,
    build_nets,
    model_members,
    pick_device,
    save_model,
)
from medpipe.segment.losses import SegmentationLoss
from medpipe.segment.model import check_patch_size, divisor
from medpipe.segment.settings import resolve_settings
from medpipe.segment.split import validation_subset

logger = logging.getLogger(__name__)


def _fingerprint(
    settings: Mapping[str, Any], images: Sequence[Sequence[str]], labels: Sequence[str], seed: int, fold: int
) -> str:
    """Hash of everything that determines the training run (a checkpoint is reused only if it matches)."""
    h = hashlib.sha256(json.dumps({"s": settings, "seed": seed, "fold": fold}, sort_keys=True, default=str).encode())
    for path in [*(p for imgs in images for p in imgs), *labels]:
        h.update(Path(path).name.encode())
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()


def _load_pretrained(nets: Mapping[str, torch.nn.Module], path: str, freeze: bool) -> None:
    """Transfer learning: copy the tensors of ``path`` that fit by name and shape; optionally freeze."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable files
        raise ConfigError(f"segmentation.train.init_checkpoint cannot be read: {exc}", path=path) from exc
    states = payload.get("state", {}) if isinstance(payload, dict) else {}
    for name, net in nets.items():
        source = states.get(name) or states.get("fine") or {}
        own = net.state_dict()
        match = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        net.load_state_dict(match, strict=False)
        logger.info("init %s from %s: %d of %d tensors copied", name, Path(path).name, len(match), len(own))
        if not match:
            raise ConfigError(f"no tensor of the checkpoint fits the {name} network", path=path)
        if freeze:
            for p in net.encoder_parameters():  # type: ignore[operator]
                p.requires_grad_(False)


def _dice(pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> float:
    """Mean Dice over foreground classes of integer maps (classes absent from both are skipped)."""
    scores = []
    for c in range(1, n_classes):
        p, t = pred == c, label == c
        denom = int(p.sum() + t.sum())
        if denom:
            scores.append(2.0 * float((p & t).sum()) / denom)
    return float(np.mean(scores)) if scores else math.nan


class _CoarseBatches:
    """Whole downsampled volumes (cascade stage 1), padded to one shape, drawn with random mirrors."""

    def __init__(self, cases: Sequence[Case], factor: int, div: Sequence[int]) -> None:
        pairs = [
            cascade.downsample(torch.from_numpy(c.image)[None], torch.from_numpy(c.label)[None], factor, div)
            for c in cases
            if c.label is not None
        ]
        shape = [max(p[0].shape[2 + a] for p in pairs) for a in range(3)]
        self.images = torch.cat([cascade.functional.pad(i, _pads(i.shape[2:], shape)) for i, _ in pairs])
        self.labels = torch.cat(
            [cascade.functional.pad(lab, _pads(lab.shape[2:], shape)) for _, lab in pairs if lab is not None]
        )

    def draw(self, idx: Sequence[int], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.images[list(idx)], self.labels[list(idx)]
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = torch.flip(x, [axis + 2]), torch.flip(y, [axis + 2])
        return x, y


def _pads(shape: Sequence[int], target: Sequence[int]) -> list[int]:
    out: list[int] = []
    for s, t in zip(reversed(list(shape)), reversed(list(target)), strict=True):
        out += [0, t - s]
    return out


def train_fold(
    images: Sequence[Sequence[str]],
    labels: Sequence[str],
    out_model: str | Path,
    out_curve_tsv: str | Path,
    out_curve_png: str | Path,
    *,
    subjects: Sequence[str],
    fold: int,
    settings: Mapping[str, Any],
    seed: int,
    deterministic: bool = True,
    threads: int | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> Path:
    """Train the model of one fold and write it with its learning curve.

    Parameters
    ----------
    images
        Per training subject, its normalised images in sequence order (channels).
    labels
        Per training subject, its label map (class indices) on the same grid.
    out_model
        ``model.pt`` (networks + metadata, see :func:`medpipe.segment.infer.save_model`) and its sidecar
        ``model.pt.json``; ``checkpoint.pt`` is kept beside it while training runs.
    out_curve_tsv, out_curve_png
        Learning curve per epoch: loss, Dice on training patches, validation Dice, learning rate.
    subjects
        Subject IDs in the order of ``images``.
    fold
        Fold index (recorded; it also varies the seed).
    settings
        ``config["segmentation"]`` (missing keys take the defaults of :mod:`medpipe.segment.settings`).
    seed, deterministic
        Master seed; deterministic torch kernels.
    threads
        CPU threads for torch.
    on_epoch_end
        Called with the epoch index after each checkpoint (progress hooks, tests).
    """
    cfg = resolve_settings(settings)
    train = cfg["train"]
    n_classes, epochs = int(cfg["num_classes"]), int(train["epochs"])
    check_patch_size(cfg["model"], train["patch_size"])
    if threads:
        torch.set_num_threads(int(threads))
    run_seed = int(seed) * 1009 + int(fold)
    device = pick_device()
    # torch's deterministic-algorithm switch replaces the oneDNN CPU kernels by reference ones that are
    # ~10x slower; oneDNN is already bit-reproducible for a fixed thread count, so on CPU it stays off.
    seed_everything(run_seed, deterministic and device.type == "cuda")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(False)
    amp = bool(train["amp"]) and device.type == "cuda"
    cases = load_cases(images, labels, subjects, n_classes)
    val_names = set(validation_subset(subjects, float(cfg["val_fraction"]), int(seed) + int(fold)))
    train_cases = [c for c in cases if c.subject not in val_names]
    val_cases = [c for c in cases if c.subject in val_names]
    n_in = int(cases[0].image.shape[0])
    nets = build_nets(cfg, n_in)
    if train["init_checkpoint"]:
        _load_pretrained(nets, str(train["init_checkpoint"]), bool(train["freeze_encoder"]))
    for net in nets.values():
        net.to(device).train()
    params = [p for net in nets.values() for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(train["learning_rate"]), weight_decay=float(train["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: (1.0 - e / epochs) ** 0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    ds = bool(cfg["model"]["deep_supervision"])
    loss_fn = SegmentationLoss(cfg["loss"], n_classes, epochs, deep_supervision=ds)
    coarse_loss = SegmentationLoss({**cfg["loss"], "name": "dice_ce"}, n_classes, epochs, deep_supervision=ds)
    dataset = patch_dataset(train_cases, cfg, with_sdm=loss_fn.needs_sdm)
    coarse = (
        _CoarseBatches(train_cases, int(cfg["model"]["cascade"]["coarse_factor"]), divisor(cfg["model"]))
        if "coarse" in nets
        else None
    )

    ckpt_path = Path(out_model).with_name("checkpoint.pt")
    fingerprint = _fingerprint(cfg, images, labels, int(seed), int(fold))
    rows: list[dict[str, Any]] = []
    start = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("fingerprint") == fingerprint:
            for name, net in nets.items():
                net.load_state_dict(ckpt["nets"][name])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            rows, start = list(ckpt["rows"]), int(ckpt["epoch"])
            logger.info("resuming fold %d from %s at epoch %d/%d", fold, ckpt_path.name, start + 1, epochs)
        else:
            logger.warning("ignoring %s: it was made with other inputs or settings", ckpt_path)
    logger.info(
        "fold %d: training on %d subjects (%d validation), %d channels, %d classes, device %s%s",
        fold,
        len(train_cases),
        len(val_cases),
        n_in,
        n_classes,
        device,
        " (AMP)" if amp else "",
    )
    t0 = time.monotonic()
    for epoch in range(start, epochs):
        epoch_seed = (run_seed * 100003 + epoch) % (2**31)
        torch.manual_seed(epoch_seed)
        dataset.transform.set_random_state(seed=epoch_seed)
        rng = np.random.default_rng(epoch_seed)
        losses, dices = [], []
        for _ in range(int(train["iterations_per_epoch"])):
            idx = rng.integers(len(train_cases), size=int(train["batch_size"]))
            items = [dataset[int(i)][0] for i in idx]
            x = torch.stack([it["image"] for it in items]).float().to(device)
            y = torch.stack([it["label"] for it in items]).long().to(device)
            sdm = torch.stack([it["sdm"] for it in items]).float().to(device) if loss_fn.needs_sdm else None
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                out = nets["fine"](x)
                loss = loss_fn(out, y, sdm, epoch)
                if coarse is not None:
                    xc, yc = coarse.draw(idx.tolist(), rng)
                    loss = loss + coarse_loss(nets["coarse"](xc.to(device)), yc.to(device), None, epoch)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 12.0)
            scaler.step(optimizer)
            scaler.update()
            if not torch.isfinite(loss):
                raise MedpipeError(
                    f"fold {fold}: loss became {float(loss)} at epoch {epoch + 1}; lower "
                    "segmentation.train.learning_rate or disable AMP"
                )
            losses.append(float(loss.detach()))
            main = out[:, 0] if ds else out
            dices.append(_dice(main.argmax(dim=1, keepdim=True), y, n_classes))
        lr_used = float(optimizer.param_groups[0]["lr"])
        scheduler.step()
        val = math.nan
        if val_cases and ((epoch + 1) % int(train["val_every"]) == 0 or epoch + 1 == epochs):
            val = _validate(nets, cfg, val_cases, device, n_in)
        rows.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "train_dice": float(np.nanmean(dices)) if not all(math.isnan(d) for d in dices) else math.nan,
                "val_dice": val,
                "learning_rate": lr_used,
            }
        )
        _save_checkpoint(ckpt_path, fingerprint, nets, optimizer, scheduler, scaler, rows, epoch + 1)
        elapsed = time.monotonic() - t0
        done = epoch + 1 - start
        logger.info(
            "fold %d epoch %d/%d: loss %.4f, patch Dice %.3f, val Dice %s, lr %.2e (%.1f s, ETA %.0f s)",
            fold,
            epoch + 1,
            epochs,
            rows[-1]["train_loss"],
            rows[-1]["train_dice"],
            "n/a" if math.isnan(val) else f"{val:.3f}",
            rows[-1]["learning_rate"],
            elapsed,
            elapsed / done * (epochs - epoch - 1),
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    meta = {
        "settings": cfg,
        "in_channels": n_in,
        "fold": int(fold),
        "seed": int(seed),
        "subjects": sorted(c.subject for c in train_cases),
        "validation_subjects": sorted(val_names),
        "spacing_mm": [round(s, 6) for s in cases[0].geometry.spacing],
        "sequences": [Path(p).name.replace(f"sub-{subjects[0]}_", "") for p in images[0]],
    }
    for net in nets.values():
        net.to("cpu")
    save_model(out_model, nets, meta)
    write_sidecar(
        out_model,
        stage="train",
        inputs=[*(p for imgs in images for p in imgs), *labels],
        parameters=cfg,
        packages=SEG_PACKAGES,
        extra={
            "fold": int(fold),
            "seed": int(seed),
            "subjects": meta["subjects"],
            "n_parameters": sum(p.numel() for n in nets.values() for p in n.parameters()),
        },
    )
    write_curve(rows, out_curve_tsv, out_curve_png, title=f"fold {fold}")
    if not train["keep_checkpoint"]:
        ckpt_path.unlink(missing_ok=True)
    logger.info("fold %d: wrote %s after %d epochs", fold, out_model, epochs)
    return Path(out_model)


def _save_checkpoint(
    path: Path,
    fingerprint: str,
    nets: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    rows: list[dict[str, Any]],
    epoch: int,
) -> None:
    payload = {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "rows": rows,
        "nets": {n: net.state_dict() for n, net in nets.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
    }
    # Through a file handle: torch.save(payload, tmp) would record the random temporary name inside
    # the zip archive and the file would differ on every run.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def _validate(
    nets: Mapping[str, torch.nn.Module],
    cfg: Mapping[str, Any],
    cases: Sequence[Case],
    device: torch.device,
    n_in: int,
) -> float:
    """Mean Dice of sliding-window predictions (no TTA) on the validation cases."""
    for net in nets.values():
        net.eval()
    model = SegModel(dict(nets), {"settings": cfg, "in_channels": n_in})
    scores = []
    for case in cases:
        image = torch.from_numpy(case.image)[None].to(device)
        probs = model_members(model, image, {"tta": False})[0]
        if case.label is not None:
            scores.append(
                _dice(
                    probs.argmax(dim=1, keepdim=True).cpu(),
                    torch.from_numpy(case.label)[None],
                    int(cfg["num_classes"]),
                )
            )
    for net in nets.values():
        net.train()
    return float(np.nanmean(scores)) if scores else math.nan
