"""Training state on disk: the resume checkpoint, its fingerprint, and pretrained weights.

``checkpoint.pt`` (beside ``model.pt``) holds the weights, optimiser, scheduler and scaler state and
the learning-curve rows after the last finished epoch, with a fingerprint of everything that
determines the run (settings, seed, fold, input files): a restarted run reuses a checkpoint only
when the fingerprint matches. Used by :mod:`.train` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medpipe.core.errors import ConfigError
from medpipe.core.io import atomic_path

logger = logging.getLogger(__name__)


def fingerprint(
    settings: Mapping[str, Any], images: Sequence[Sequence[str]], labels: Sequence[str], seed: int, fold: int
) -> str:
    """Hash of everything that determines the training run (a checkpoint is reused only if it matches)."""
    h = hashlib.sha256(json.dumps({"s": settings, "seed": seed, "fold": fold}, sort_keys=True, default=str).encode())
    for path in [*(p for imgs in images for p in imgs), *labels]:
        h.update(Path(path).name.encode())
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()


def load_pretrained(nets: Mapping[str, torch.nn.Module], path: str, freeze: bool) -> None:
    """Transfer learning: copy the tensors of ``path`` that fit by name and shape; optionally freeze.

    Parameters
    ----------
    nets
        The networks of the new run (``fine``, ``coarse``); a checkpoint without a ``coarse``
        network initialises both from its ``fine`` one.
    path
        A ``model.pt`` or ``checkpoint.pt``-like torch file with a ``state`` mapping.
    freeze
        Freeze the encoder parameters (train the decoder only).

    Raises
    ------
    ConfigError
        When the file cannot be read or no tensor fits a network.
    """
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


def save_checkpoint(
    path: Path,
    fingerprint: str,
    nets: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    rows: list[dict[str, Any]],
    epoch: int,
) -> None:
    """Write the state after ``epoch`` finished epochs atomically to ``path``."""
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


def read_checkpoint(path: Path, fingerprint: str, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it exists and was made by the run with ``fingerprint``, else ``None``."""
    if not path.exists():
        return None
    ckpt: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    if ckpt.get("fingerprint") != fingerprint:
        logger.warning("ignoring %s: it was made with other inputs or settings", path)
        return None
    return ckpt
