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

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medpipe.core.determinism import seed_everything
from medpipe.core.errors import MedpipeError
from medpipe.core.sidecar import write_sidecar
from medpipe.segment.cascade import CoarseBatches
from medpipe.segment.checkpoint import fingerprint, load_pretrained, read_checkpoint, save_checkpoint
from medpipe.segment.curve import write_curve
from medpipe.segment.data import Case, load_cases, patch_dataset
from medpipe.segment.intensity import normalise_training_cases
from medpipe.segment.losses import SegmentationLoss
from medpipe.segment.model import (
    SEG_PACKAGES,
    autocast,
    build_nets,
    check_patch_size,
    divisor,
    pick_device,
    save_model,
)
from medpipe.segment.settings import resolve_settings
from medpipe.segment.split import validation_subset
from medpipe.segment.validate import mean_dice, validation_dice

logger = logging.getLogger(__name__)


def _run_seed(seed: int, fold: int) -> int:
    """Seed of one fold's run, from the master seed and the fold index."""
    return int(seed) * 1009 + int(fold)


@dataclass
class _Run:
    """One fold's training state: settings, device, data, networks, optimiser and losses."""

    cfg: dict[str, Any]
    seed: int
    fold: int
    device: torch.device
    amp: bool
    train_cases: list[Case]
    val_cases: list[Case]
    n_in: int
    nets: dict[str, torch.nn.Module]
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: SegmentationLoss
    coarse_loss: SegmentationLoss
    dataset: Any
    coarse: CoarseBatches | None

    @property
    def run_seed(self) -> int:
        """Seed of this fold's run."""
        return _run_seed(self.seed, self.fold)

    @property
    def n_classes(self) -> int:
        """Output classes, background included."""
        return int(self.cfg["num_classes"])

    @property
    def epochs(self) -> int:
        """Epochs of the whole run."""
        return int(self.cfg["train"]["epochs"])


def _setup_device(run_seed: int, deterministic: bool, threads: int | None) -> torch.device:
    """Thread count, device and seeds of the run (before any network is built).

    Parameters
    ----------
    run_seed
        Seed of the fold (from the master seed and the fold index).
    deterministic
        Deterministic torch kernels (on CUDA only, see below).
    threads
        CPU threads for torch (``None``: torch's default).

    Returns
    -------
    torch.device
        CUDA when available, else CPU.
    """
    if threads:
        torch.set_num_threads(int(threads))
    device = pick_device()
    # torch's deterministic-algorithm switch replaces the oneDNN CPU kernels by reference ones that are
    # ~10x slower; oneDNN is already bit-reproducible for a fixed thread count, so on CPU it stays off.
    seed_everything(run_seed, deterministic and device.type == "cuda")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(False)
    return device


def _build_run(
    cfg: dict[str, Any],
    cases: Sequence[Case],
    val_names: set[str],
    *,
    seed: int,
    fold: int,
    device: torch.device,
) -> _Run:
    """Networks (initialised, optionally from a checkpoint), optimiser, scheduler, losses and patch data.

    Parameters
    ----------
    cfg
        Resolved segmentation settings.
    cases
        Every subject of the fold (training and validation).
    val_names
        Subjects held back for validation.
    seed, fold, device
        Master seed, fold index and the device to train on.

    Returns
    -------
    _Run
        The state at epoch 0 (networks in training mode on ``device``).
    """
    train, n_classes, epochs = cfg["train"], int(cfg["num_classes"]), int(cfg["train"]["epochs"])
    amp = bool(train["amp"]) and device.type == "cuda"
    train_cases = [c for c in cases if c.subject not in val_names]
    val_cases = [c for c in cases if c.subject in val_names]
    n_in = int(cases[0].image.shape[0])
    nets = build_nets(cfg, n_in)
    if train["init_checkpoint"]:
        load_pretrained(nets, str(train["init_checkpoint"]), bool(train["freeze_encoder"]))
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
        CoarseBatches(train_cases, int(cfg["model"]["cascade"]["coarse_factor"]), divisor(cfg["model"]))
        if "coarse" in nets
        else None
    )
    return _Run(
        cfg=cfg,
        seed=seed,
        fold=fold,
        device=device,
        amp=amp,
        train_cases=train_cases,
        val_cases=val_cases,
        n_in=n_in,
        nets=nets,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        loss_fn=loss_fn,
        coarse_loss=coarse_loss,
        dataset=dataset,
        coarse=coarse,
    )


def _resume(run: _Run, ckpt_path: Path, digest: str) -> tuple[list[dict[str, Any]], int]:
    """Restore the state of ``checkpoint.pt`` when it was made by the same run.

    Returns
    -------
    rows : list of dict
        Learning-curve rows of the epochs already done.
    start : int
        First epoch still to run (0 without a usable checkpoint).
    """
    ckpt = read_checkpoint(ckpt_path, digest, run.device)
    if ckpt is None:
        return [], 0
    for name, net in run.nets.items():
        net.load_state_dict(ckpt["nets"][name])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    rows, start = list(ckpt["rows"]), int(ckpt["epoch"])
    logger.info("resuming fold %d from %s at epoch %d/%d", run.fold, ckpt_path.name, start + 1, run.epochs)
    return rows, start


def _train_step(run: _Run, epoch: int, rng: np.random.Generator) -> tuple[float, float]:
    """One optimiser step on a batch of random patches (and whole coarse volumes for a cascade).

    Parameters
    ----------
    run
        The training state (updated in place).
    epoch
        Epoch index (loss schedules, messages).
    rng
        The epoch's generator: draws the batch, then the coarse mirrors.

    Returns
    -------
    loss : float
        The step's loss.
    dice : float
        Mean foreground Dice of the step's predictions on its training patches.
    """
    train = run.cfg["train"]
    idx = rng.integers(len(run.train_cases), size=int(train["batch_size"]))
    items = [run.dataset[int(i)][0] for i in idx]
    x = torch.stack([it["image"] for it in items]).float().to(run.device)
    y = torch.stack([it["label"] for it in items]).long().to(run.device)
    sdm = torch.stack([it["sdm"] for it in items]).float().to(run.device) if run.loss_fn.needs_sdm else None
    run.optimizer.zero_grad(set_to_none=True)
    with autocast(run.device, run.amp):
        out = run.nets["fine"](x)
        loss = run.loss_fn(out, y, sdm, epoch)
        if run.coarse is not None:
            xc, yc = run.coarse.draw(idx.tolist(), rng)
            loss = loss + run.coarse_loss(run.nets["coarse"](xc.to(run.device)), yc.to(run.device), None, epoch)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.params, 12.0)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if not torch.isfinite(loss):
        raise MedpipeError(
            f"fold {run.fold}: loss became {float(loss)} at epoch {epoch + 1}; lower "
            "segmentation.train.learning_rate or disable AMP"
        )
    main = out[:, 0] if bool(run.cfg["model"]["deep_supervision"]) else out
    return float(loss.detach()), mean_dice(main.argmax(dim=1, keepdim=True), y, run.n_classes)


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """Re-seed from ``(seed, epoch)``, run the epoch's steps, step the scheduler, validate when due.

    Returns
    -------
    dict
        The epoch's learning-curve row: ``epoch`` (1-based), ``train_loss``, ``train_dice``,
        ``val_dice`` (NaN when not validated) and ``learning_rate``.
    """
    train = run.cfg["train"]
    epoch_seed = (run.run_seed * 100003 + epoch) % (2**31)
    torch.manual_seed(epoch_seed)
    run.dataset.transform.set_random_state(seed=epoch_seed)
    rng = np.random.default_rng(epoch_seed)
    losses, dices = [], []
    for _ in range(int(train["iterations_per_epoch"])):
        loss, dice = _train_step(run, epoch, rng)
        losses.append(loss)
        dices.append(dice)
    lr_used = float(run.optimizer.param_groups[0]["lr"])
    run.scheduler.step()
    val = math.nan
    if run.val_cases and ((epoch + 1) % int(train["val_every"]) == 0 or epoch + 1 == run.epochs):
        val = validation_dice(run.nets, run.cfg, run.val_cases, run.device, run.n_in)
    return {
        "epoch": epoch + 1,
        "train_loss": float(np.mean(losses)),
        "train_dice": float(np.nanmean(dices)) if not all(math.isnan(d) for d in dices) else math.nan,
        "val_dice": val,
        "learning_rate": lr_used,
    }


def _log_epoch(run: _Run, row: Mapping[str, Any], done: int, elapsed: float) -> None:
    """Progress line of one epoch (``done`` epochs run in this process, ``elapsed`` seconds)."""
    epoch = int(row["epoch"])
    logger.info(
        "fold %d epoch %d/%d: loss %.4f, patch Dice %.3f, val Dice %s, lr %.2e (%.1f s, ETA %.0f s)",
        run.fold,
        epoch,
        run.epochs,
        row["train_loss"],
        row["train_dice"],
        "n/a" if math.isnan(row["val_dice"]) else f"{row['val_dice']:.3f}",
        row["learning_rate"],
        elapsed,
        elapsed / done * (run.epochs - epoch),
    )


def _model_meta(
    run: _Run, cases: Sequence[Case], val_names: set[str], images: Sequence[Sequence[str]], subjects: Sequence[str]
) -> dict[str, Any]:
    """Metadata stored in ``model.pt``: settings, channels, fold, seed, subjects, spacing, sequences."""
    return {
        "settings": run.cfg,
        "in_channels": run.n_in,
        "fold": run.fold,
        "seed": run.seed,
        "subjects": sorted(c.subject for c in run.train_cases),
        "validation_subjects": sorted(val_names),
        "spacing_mm": [round(s, 6) for s in cases[0].geometry.spacing],
        "sequences": [Path(p).name.replace(f"sub-{subjects[0]}_", "") for p in images[0]],
    }


def _write_model(run: _Run, out_model: str | Path, meta: Mapping[str, Any], inputs: Sequence[str]) -> None:
    """Move the networks to the CPU and write ``model.pt`` with its sidecar."""
    for net in run.nets.values():
        net.to("cpu")
    save_model(out_model, run.nets, meta)
    write_sidecar(
        out_model,
        stage="train",
        inputs=list(inputs),
        parameters=run.cfg,
        packages=SEG_PACKAGES,
        extra={
            "fold": run.fold,
            "seed": run.seed,
            "subjects": meta["subjects"],
            "validation_subjects": meta["validation_subjects"],
            "input_normalisation": meta["input_normalisation"],
            "n_parameters": sum(p.numel() for n in run.nets.values() for p in n.parameters()),
        },
    )


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
        ``model.pt`` (networks + metadata, see :func:`medpipe.segment.model.save_model`) and its sidecar
        ``model.pt.json``; ``checkpoint.pt`` is kept beside it while training runs.
    out_curve_tsv, out_curve_png
        Learning curve per epoch: loss, Dice on training patches, validation Dice, learning rate.
    subjects
        Subject IDs in the order of ``images``.
    fold
        Fold index (recorded; it also varies the seed).
    settings
        ``config["segmentation"]`` (missing keys take the defaults of the config schema, see
        :func:`medpipe.segment.settings.resolve_settings`).
    seed, deterministic
        Master seed; deterministic torch kernels.
    threads
        CPU threads for torch.
    on_epoch_end
        Called with the epoch index after each checkpoint (progress hooks, tests).

    Returns
    -------
    pathlib.Path
        ``out_model``.
    """
    cfg = resolve_settings(settings)
    check_patch_size(cfg["model"], cfg["train"]["patch_size"])
    device = _setup_device(_run_seed(seed, fold), deterministic, threads)
    cases = load_cases(images, labels, subjects, int(cfg["num_classes"]))
    input_normalisation = normalise_training_cases(cases, images, subjects)  # ct_foreground channels
    val_names = set(validation_subset(subjects, float(cfg["val_fraction"]), int(seed) + int(fold)))
    run = _build_run(cfg, cases, val_names, seed=int(seed), fold=int(fold), device=device)
    ckpt_path = Path(out_model).with_name("checkpoint.pt")
    digest = fingerprint(cfg, images, labels, int(seed), int(fold))
    rows, start = _resume(run, ckpt_path, digest)
    logger.info(
        "fold %d: training on %d subjects (%d validation), %d channels, %d classes, device %s%s",
        fold,
        len(run.train_cases),
        len(run.val_cases),
        run.n_in,
        run.n_classes,
        device,
        " (AMP)" if run.amp else "",
    )
    t0 = time.monotonic()
    for epoch in range(start, run.epochs):
        rows.append(_train_epoch(run, epoch))
        save_checkpoint(ckpt_path, digest, run.nets, run.optimizer, run.scheduler, run.scaler, rows, epoch + 1)
        _log_epoch(run, rows[-1], epoch + 1 - start, time.monotonic() - t0)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    meta = {**_model_meta(run, cases, val_names, images, subjects), "input_normalisation": input_normalisation}
    init = [str(cfg["train"]["init_checkpoint"])] if cfg["train"]["init_checkpoint"] else []  # provenance
    _write_model(run, out_model, meta, [*(p for imgs in images for p in imgs), *labels, *init])
    write_curve(rows, out_curve_tsv, out_curve_png, title=f"fold {fold}")
    if not cfg["train"]["keep_checkpoint"]:
        ckpt_path.unlink(missing_ok=True)
    logger.info("fold %d: wrote %s after %d epochs", fold, out_model, run.epochs)
    return Path(out_model)
