"""Measurements on the machine that a plan needs: the memory budget, and the time of a few training steps.

:func:`seconds_per_epoch` times optimiser steps of the planned network on random patches (forward, loss,
backward, AdamW step); the planner divides the time budget by it (:class:`medpipe.segment.plan.Budget`). It leaves
out data loading, augmentation and validation, so real epochs are somewhat longer. :func:`memory_budget_mb` is the
GPU's memory on CUDA, otherwise a share of the RAM available now.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medpipe.segment.losses import SegmentationLoss
from medpipe.segment.model import autocast, build_network, pick_device
from medpipe.segment.settings import resolve_settings

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")


#: nnU-Net v2 plans every GPU for 8 GB (``ExperimentPlanner``'s ``gpu_memory_target_in_gb``), whatever it has.
NNUNET_MEMORY_TARGET_MB = 8192.0


def memory_budget_mb(*, prefer_cuda: bool = True, ram_share: float = 0.5) -> float:
    """Memory the machine has for a training step (MiB): CUDA device 0's total memory, else ``ram_share`` of the
    installed RAM (not the free RAM, which changes from one run to the next and would change the plan)."""
    if prefer_cuda and torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(0).total_memory) / 2**20
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return ram_share * float(total) / 2**20


def plan_memory_mb(typed: float | None) -> tuple[float, str]:
    """The memory budget of a plan and why: the typed ``segmentation.plan_memory_mb``, else nnU-Net's 8 GB
    target, or less when the machine (:func:`memory_budget_mb`) has less."""
    if typed is not None:
        return float(typed), f"segmentation.plan_memory_mb typed in config: {float(typed):g} MiB"
    machine = memory_budget_mb()
    where = "CUDA device 0" if torch.cuda.is_available() else "half the installed RAM"
    if machine < NNUNET_MEMORY_TARGET_MB:
        return machine, f"{where}: {machine:.0f} MiB (< nnU-Net's 8 GB target)"
    return NNUNET_MEMORY_TARGET_MB, f"nnU-Net's 8 GB target ({where}: {machine:.0f} MiB)"


def _resident_kb(field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process (Linux), else ``None``."""
    try:
        match = re.search(rf"{field}:\s+(\d+)", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    """Reset the resident-memory high-water mark (Linux >= 4.0: ``/proc/self/clear_refs``); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class StepTiming:
    """Seconds per optimiser step and peak memory growth of the first step (MiB; ``None`` if not measurable)."""

    seconds_per_step: float
    peak_memory_mb: float | None


def _first_step_memory(step: Any, device: torch.device) -> float | None:
    """Run ``step()`` once and return the memory it added at its peak (MiB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        return float(torch.cuda.max_memory_allocated(device) - base) / 2**20
    before = _resident_kb("VmRSS") if _reset_peak() else None
    step()
    peak = _resident_kb("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024.0


def time_steps(
    settings: Mapping[str, Any], in_channels: int, *, steps: int = 3, device: torch.device | None = None
) -> StepTiming:
    """Time ``steps`` training steps of the fine network of ``settings`` (after one untimed step).

    Parameters
    ----------
    settings
        ``config["segmentation"]`` (partial: schema defaults filled in), e.g. a plan's segmentation section.
    in_channels
        Input channels.
    steps
        Timed steps (each: batch of random patches, forward, loss, backward, AdamW step).
    device
        Default: CUDA when available.

    Returns
    -------
    StepTiming
        The first step's peak memory is only meaningful in a fresh process on CPU (the high-water mark).
    """
    cfg = resolve_settings(settings)
    device = device or pick_device()
    net = build_network(cfg["model"], in_channels, int(cfg["num_classes"])).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(cfg["train"]["learning_rate"]))
    loss_fn = SegmentationLoss(cfg["loss"], int(cfg["num_classes"]), 1, bool(cfg["model"]["deep_supervision"]))
    shape = (int(cfg["train"]["batch_size"]), in_channels, *(int(p) for p in cfg["train"]["patch_size"]))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(device)
    y = (torch.rand((shape[0], 1, *shape[2:]), generator=generator) > 0.9).long().to(device)
    amp = bool(cfg["train"]["amp"])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()

    peak = _first_step_memory(step, device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / max(steps, 1)
    logger.info("training step of patch %s: %.3f s, first-step peak %s MiB", list(shape), seconds, peak)
    return StepTiming(seconds, peak)


def seconds_per_epoch(settings: Mapping[str, Any], in_channels: int, **kwargs: Any) -> float:
    """``iterations_per_epoch`` x the time of one step of ``settings`` (:func:`time_steps`; a cascade's coarse
    stage is not timed, so its epochs take longer)."""
    cfg = resolve_settings(settings)
    timing = time_steps(cfg, in_channels, **kwargs)
    return float(cfg["train"]["iterations_per_epoch"]) * timing.seconds_per_step
