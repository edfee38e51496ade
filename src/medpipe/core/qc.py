"""QC figures for the report: orthogonal slices, contours, checkerboards, histograms.

All functions take arrays indexed ``[i, j, k]`` on one grid plus the voxel spacing (so slices are
drawn with the right aspect ratio) and write a PNG atomically. Rendering uses a fixed DPI and no
timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from medpipe.core.io import save_png

logger = logging.getLogger(__name__)

_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2")
_DPI = 90


def _centre(masks: Mapping[str, npt.NDArray[Any]], shape: Sequence[int]) -> tuple[int, int, int]:
    """Slice indices through the centroid of the first non-empty mask, else the volume centre."""
    for mask in masks.values():
        idx = np.argwhere(np.asarray(mask) > 0)
        if len(idx):
            c = idx.mean(axis=0).round().astype(int)
            return (int(c[0]), int(c[1]), int(c[2]))
    return (shape[0] // 2, shape[1] // 2, shape[2] // 2)


def _slices(vol: npt.NDArray[Any], centre: tuple[int, int, int]) -> list[npt.NDArray[Any]]:
    """Sagittal, coronal and axial slices, rotated for display (superior/anterior up)."""
    return [np.rot90(vol[centre[0], :, :]), np.rot90(vol[:, centre[1], :]), np.rot90(vol[:, :, centre[2]])]


def _aspects(spacing: Sequence[float]) -> list[float]:
    sx, sy, sz = (float(s) for s in spacing)
    return [sz / sy, sz / sx, sy / sx]


def _window(image: npt.NDArray[Any]) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _save(fig: Any, out: str | Path) -> Path:
    return save_png(fig, out, dpi=_DPI)


def save_overlay(
    image: npt.NDArray[Any],
    masks: Mapping[str, npt.NDArray[Any]],
    out: str | Path,
    *,
    title: str,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Three orthogonal slices of ``image`` with the contour of each mask in its own colour."""
    image = np.asarray(image, dtype=np.float32)
    centre = _centre(masks, image.shape)
    vmin, vmax = _window(image)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax, img_sl, aspect, n in zip(axes, _slices(image, centre), _aspects(spacing), range(3), strict=True):
        ax.imshow(img_sl, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        for (name, mask), colour in zip(masks.items(), _COLOURS, strict=False):
            sl = _slices(np.asarray(mask, dtype=np.float32), centre)[n]
            if sl.max() > 0:
                ax.contour(sl, levels=[0.5], colors=[colour], linewidths=1.2)
            if n == 0:
                ax.plot([], [], color=colour, label=name)
        ax.set_axis_off()
    if masks:
        axes[0].legend(loc="lower left", fontsize=8, framealpha=0.6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def save_checkerboard(
    fixed: npt.NDArray[Any],
    moving: npt.NDArray[Any],
    out: str | Path,
    *,
    title: str,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    tiles: int = 8,
) -> Path:
    """Checkerboard of two images on one grid (each rescaled to its own 1–99 % window)."""
    a = np.asarray(fixed, dtype=np.float32)
    b = np.asarray(moving, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"checkerboard needs one grid, got {a.shape} and {b.shape}")
    lo_a, hi_a = _window(a)
    lo_b, hi_b = _window(b)
    a = np.clip((a - lo_a) / (hi_a - lo_a), 0, 1)
    b = np.clip((b - lo_b) / (hi_b - lo_b), 0, 1)
    centre = (a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax, sa, sb, aspect in zip(axes, _slices(a, centre), _slices(b, centre), _aspects(spacing), strict=True):
        yy, xx = np.indices(sa.shape)
        board = ((yy * tiles // sa.shape[0]) + (xx * tiles // sa.shape[1])) % 2 == 0
        ax.imshow(np.where(board, sa, sb), cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def save_histogram(
    values: Mapping[str, npt.NDArray[Any]],
    out: str | Path,
    *,
    title: str,
    xlabel: str,
    bins: int = 100,
) -> Path:
    """Overlaid intensity histograms (density) of several value sets."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (name, vals), colour in zip(values.items(), _COLOURS, strict=False):
        v = np.asarray(vals, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(v, bins=bins, density=True, histtype="step", color=colour, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    if values:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def save_image_panel(
    image: npt.NDArray[Any],
    out: str | Path,
    *,
    title: str,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    cmap: str = "gray",
) -> Path:
    """Three orthogonal slices through the centre of ``image`` (with a colour bar)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 4:
        image = image[..., 0]
    centre = (image.shape[0] // 2, image.shape[1] // 2, image.shape[2] // 2)
    vmin, vmax = _window(image)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    im = None
    for ax, sl, aspect in zip(axes, _slices(image, centre), _aspects(spacing), strict=True):
        im = ax.imshow(sl, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        ax.set_axis_off()
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)
