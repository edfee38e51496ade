"""Synthetic head anatomy for the demo cohort, built from nilearn's MNI152 (ICBM 2009a) template.

nilearn ships the 1 mm skull-stripped T1, grey-matter and white-matter templates and derives the
brain mask from them; nothing is downloaded. Around the brain a head is synthesised from the
distance (mm) to the brain surface: subarachnoid CSF, inner table, diploe, outer table,
galea/muscle, subcutaneous fat and skin, each with its own T1w and T2w signal. The template is
padded below the cerebellum so the skull closes under the brain.

Tissue maps are sampled onto a subject's acquisition grid through an affine map (subject
anatomy and, for the second sequence, rigid head motion), so every subject and sequence is
resampled exactly once from the template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

#: Slices of empty template added below the cerebellum so the synthetic skull closes under the brain.
PAD_BELOW_VOX = 24

#: Outer edge (mm from the brain surface) of each head layer, before the per-subject thickness factor.
HEAD_LAYERS_MM: tuple[tuple[str, float], ...] = (
    ("csf", 2.0),
    ("inner_table", 4.0),
    ("diploe", 6.5),
    ("outer_table", 8.0),
    ("galea", 10.0),
    ("fat", 13.0),
    ("skin", 14.0),
)

#: Relative signal per tissue and sequence (T1w: white matter = 1; T2w: CSF = 1).
SIGNAL: dict[str, dict[str, float]] = {
    "T1w": {
        "wm": 1.0,
        "gm": 0.62,
        "csf": 0.15,
        "inner_table": 0.04,
        "diploe": 0.6,
        "outer_table": 0.04,
        "galea": 0.4,
        "fat": 0.95,
        "skin": 0.55,
        "air": 0.0,
        "rim": 1.6,
        "core": 0.2,
        "edema": 0.8,
    },
    "T2w": {
        "wm": 0.36,
        "gm": 0.56,
        "csf": 1.0,
        "inner_table": 0.04,
        "diploe": 0.4,
        "outer_table": 0.04,
        "galea": 0.3,
        "fat": 0.65,
        "skin": 0.45,
        "air": 0.0,
        "rim": 0.82,
        "core": 1.0,
        "edema": 0.62,
    },
}


@dataclass(frozen=True)
class Template:
    """MNI152 maps on the (padded) 1 mm template grid."""

    brain: F32
    brain_signal: dict[str, F32]
    dist_out_mm: F32
    affine: npt.NDArray[np.float64]
    deep_wm_index: npt.NDArray[np.int64]
    deep_wm_depth_mm: F32


@dataclass(frozen=True)
class SampledMaps:
    """Template maps resampled onto one acquisition grid (all ``float32``, same shape)."""

    brain: F32
    brain_signal: F32
    dist_out_mm: F32


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load nilearn's 1 mm MNI152 brain mask, GM and WM templates and derive the head distance map."""
    from nilearn import datasets

    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    brain = ndi.binary_fill_holes(np.asarray(mask_img.dataobj) > 0)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    pad = ((0, 0), (0, 0), (PAD_BELOW_VOX, 0))
    brain = np.pad(brain, pad)
    gm = np.pad(gm * brain[..., PAD_BELOW_VOX:], pad)
    wm = np.pad(wm * brain[..., PAD_BELOW_VOX:], pad)
    affine = np.asarray(mask_img.affine, dtype=np.float64).copy()
    affine[:3, 3] -= affine[:3, 2] * PAD_BELOW_VOX
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    dist_out = ndi.distance_transform_edt(~brain, sampling=spacing).astype(np.float32)
    # depth below the brain surface (for lesion placement): a 2 mm subsample is precise enough
    depth = ndi.distance_transform_edt(brain[::2, ::2, ::2], sampling=2 * spacing).astype(np.float32)
    deep_sub = np.flatnonzero((wm[::2, ::2, ::2] > 0.6) & (depth > 10.0))
    deep = np.ravel_multi_index(tuple(2 * np.array(np.unravel_index(deep_sub, depth.shape))), brain.shape)
    logger.info("loaded MNI152 template %s (brain %.0f ml)", brain.shape, brain.sum() * spacing.prod() / 1000)
    return Template(
        brain=brain.astype(np.float32),
        brain_signal={seq: _brain_signal(gm, wm, seq) for seq in SIGNAL},
        dist_out_mm=dist_out,
        affine=affine,
        deep_wm_index=deep.astype(np.int64),
        deep_wm_depth_mm=depth.ravel()[deep_sub],
    )


def _brain_signal(gm: F32, wm: F32, sequence: str) -> F32:
    """Signal inside the brain from the GM and WM probabilities; the remainder is CSF."""
    sig = SIGNAL[sequence]
    norm = np.maximum(gm + wm, 1.0)
    gm, wm = gm / norm, wm / norm
    csf = 1.0 - gm - wm
    return (wm * sig["wm"] + gm * sig["gm"] + csf * sig["csf"]).astype(np.float32)


def sample_template(
    template: Template,
    grid_affine: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    world_to_template: npt.NDArray[np.float64],
    sequence: str,
) -> SampledMaps:
    """Resample the template maps onto a grid (trilinear).

    Parameters
    ----------
    template
        Output of :func:`load_template`.
    grid_affine, shape
        Acquisition grid (voxel to RAS mm).
    world_to_template
        4x4 map from acquisition world coordinates (RAS mm) to template world coordinates.
    """
    m = np.linalg.inv(template.affine) @ world_to_template @ grid_affine

    def _sample(arr: F32, mode: str) -> F32:
        out = np.empty(shape, dtype=np.float32)
        ndi.affine_transform(arr, m[:3, :3], m[:3, 3], output_shape=shape, output=out, order=1, mode=mode, cval=0.0)
        return out

    return SampledMaps(
        brain=_sample(template.brain, "constant"),
        brain_signal=_sample(template.brain_signal[sequence], "nearest"),
        dist_out_mm=_sample(template.dist_out_mm, "nearest"),
    )


def tissue_signal(maps: SampledMaps, sequence: str, layer_factor: float) -> F32:
    """Noise-free, bias-free signal of head and brain for one sequence (lesion not included).

    Inside the brain the signal mixes WM, GM and CSF by their template probabilities; outside,
    the head layer at the sampled distance from the brain surface sets it.
    """
    sig = SIGNAL[sequence]
    edges = np.array([edge * layer_factor for _, edge in HEAD_LAYERS_MM], dtype=np.float32)
    values = np.array([sig[name] for name, _ in HEAD_LAYERS_MM] + [sig["air"]], dtype=np.float32)
    layer_val = values[np.digitize(maps.dist_out_mm, edges)]
    b = np.clip(maps.brain, 0.0, 1.0)
    return (b * maps.brain_signal + (1.0 - b) * layer_val).astype(np.float32)


def pick_lesion_centre(template: Template, rng: np.random.Generator, radius_mm: float) -> npt.NDArray[np.float64]:
    """Choose a white-matter point in template world coordinates deep enough for a lesion of ``radius_mm``."""
    need = 1.3 * radius_mm + 3.0
    ok = template.deep_wm_index[template.deep_wm_depth_mm >= need]
    if ok.size == 0:  # the deepest white matter is ~45 mm from the surface; only reached for huge radii
        ok = template.deep_wm_index[template.deep_wm_depth_mm >= template.deep_wm_depth_mm.max() - 1.0]
    flat = int(ok[rng.integers(ok.size)])
    ijk = np.array(np.unravel_index(flat, template.brain.shape), dtype=np.float64)
    return (template.affine @ np.append(ijk, 1.0))[:3]
