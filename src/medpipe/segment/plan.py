"""Automatic plan: network grid, architecture, patch, batch, network depth, normalisation, loss and training length
from a dataset fingerprint (:mod:`.dataset_fingerprint`) and a compute budget.

Every decision is a :class:`Decision` naming the config key it sets, its value, the rule that made it (with the
numbers) and its source: ``plan``, or ``override`` when the user typed that key in the config (the typed value
wins; the rule text says what the plan would have chosen). The rules, in order:

* target spacing (``preprocess.target_spacing_mm``): nnU-Net's median / 10th-percentile rule
  (:func:`medpipe.segment.plan_rules.target_spacing`);
* 2D or 3D (``segmentation.model.architecture``): the reference study's flowchart. Thick slices (median slice
  spacing >= :data:`THICK_SLICE_RATIO` x the in-plane spacing, nnU-Net's ``ANISO_THRESHOLD``) -> 2D across the
  thick axis, whichever array axis it is; a small cohort (<= :data:`SMALL_COHORT` subjects) of tube- or
  line-shaped structures (median elongation >= :data:`TUBE_ELONGATION` for every class) -> 2D; fewer than 8
  slices on axis 2 -> 2D; otherwise 3D. nnU-Net itself trains 2D and 3D and picks by cross-validation; medpipe
  plans one;
* slice axis (``segmentation.model.slice_axis``, 2D only): the thick axis when there is one, else axis 2 (the
  schema default); the 2D patch is one voxel thick on it;
* patch, pooling and batch (``segmentation.train.patch_size``, ``segmentation.model.strides`` and ``channels``,
  ``segmentation.train.batch_size``): nnU-Net's patch search with :func:`~.plan_rules.memory_mb` against
  ``Budget.memory_mb``. nnU-Net pools each axis on its own; ``segmentation.model.strides`` applies one stride to
  every axis, so the depth is the smallest per-axis pool count;
* cascade (3D): when the patch holds < 25 % of the median image (nnU-Net's ``lowres_creation_threshold``). The
  coarse stage of medpipe's cascade sees whole images downsampled by ``cascade.coarse_factor``: the smallest
  factor (2..:data:`~.plan_network.MAX_COARSE_FACTOR`) whose coarse volume fits the memory left by the fine
  patch, which is re-planned with half the budget; no factor fits -> 3D patches;
* squeeze-and-excitation: on (the reference study: "in most cases");
* normalisation per channel: CT -> ``ct_foreground`` (nnU-Net's CTNormalization: clip to the foreground's
  0.5-99.5th percentiles, then z-score with the foreground mean and SD, fitted on each fold's training subjects);
  other modalities -> ``zscore``;
* loss: the smallest class's median share of the cropped image < :data:`SMALL_TARGET_SHARE` -> ``dice_focal``
  (the reference study: a small target -> focal loss), else ``dice_ce``; class weights (CE/focal term)
  ``sqrt(background share / class share)``, at most :data:`MAX_CLASS_WEIGHT`, when a class holds <
  :data:`IMBALANCE_SHARE` of the image, else none;
* epochs: ``floor(Budget.minutes * 60 / Budget.seconds_per_epoch)``, at most :data:`MAX_EPOCHS` (nnU-Net's
  default trainer); fewer than one -> :class:`ConfigError` with the numbers.

The thresholds other than nnU-Net's are medpipe's reading of the flowchart, which gives none.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medpipe.core.errors import ConfigError
from medpipe.core.plan_record import PLAN_FORMAT, SOURCES, Decision, Plan, key_path
from medpipe.segment import plan_rules as rules
from medpipe.segment.dataset_fingerprint import DatasetFingerprint
from medpipe.segment.plan_network import MISSING, NetworkPlan, plan_cascade, plan_network
from medpipe.segment.settings import check_slice_axis, resolve_settings

logger = logging.getLogger(__name__)

__all__ = ["PLAN_FORMAT", "SOURCES", "Budget", "Decision", "Plan", "make_plan"]

THICK_SLICE_RATIO = rules.ANISO_THRESHOLD
SMALL_COHORT = 50
TUBE_ELONGATION = 5.0
SMALL_TARGET_SHARE = 0.01
IMBALANCE_SHARE = 0.05
MAX_CLASS_WEIGHT = 10.0
MAX_EPOCHS = 1000


@dataclass(frozen=True)
class Budget:
    """Compute budget of the plan.

    Attributes
    ----------
    memory_mb
        Memory one training step may use (MiB): GPU memory on CUDA, a share of the RAM on CPU.
    minutes
        Training time per fold (``None``: epochs are not planned).
    seconds_per_epoch
        Measured on the machine for the planned settings (:func:`medpipe.segment.plan_measure.seconds_per_epoch`).
    """

    memory_mb: float
    minutes: float | None = None
    seconds_per_epoch: float | None = None


class _Recorder:
    """Collects decisions; a key typed in ``overrides`` wins and is marked ``override``."""

    def __init__(self, overrides: Mapping[str, Any] | None) -> None:
        user = copy.deepcopy(dict(overrides or {}))
        seg = user.get("segmentation")
        if isinstance(seg, dict) and isinstance(seg.get("loss"), str):
            seg["loss"] = {"name": seg["loss"]}
        self.overrides = user
        self.decisions: dict[str, Decision] = {}

    def typed(self, key: str) -> Any:
        """The value typed for ``key``, or ``MISSING``."""
        node: Any = self.overrides
        for part in key_path(key):
            if not isinstance(node, Mapping) or part not in node:
                return MISSING
            node = node[part]
        return node

    def decide(self, key: str, planned: Any, rule: str) -> Any:
        """Record ``planned`` (or the typed value) for ``key``; return the value that holds."""
        typed = self.typed(key)
        if typed is MISSING:
            decision = Decision(key, planned, rule, "plan")
        elif typed == planned:
            decision = Decision(key, typed, f"typed in config; {rule}", "override")
        else:
            decision = Decision(
                key, typed, f"typed in config (plan: {json.dumps(planned)}, because {rule})", "override"
            )
        self.decisions[key] = decision
        logger.info("plan %s = %s [%s] %s", key, json.dumps(decision.value), decision.source, decision.rule)
        return decision.value


def _thick_axis(fp: DatasetFingerprint) -> tuple[int, float, str]:
    """The coarsest axis of the median spacing, its ratio to the coarser of the two others, and the numbers as text."""
    med = np.median(fp.spacings, axis=0)
    worst = int(np.argmax(med))
    ratio = float(med[worst] / max(med[i] for i in range(3) if i != worst))
    text = f"median spacing {[round(float(v), 3) for v in med]} mm: axis {worst} is {ratio:.2f}x the others"
    return worst, ratio, text


def _dims(fp: DatasetFingerprint, median_shape: Sequence[float]) -> tuple[int, str]:
    """2D or 3D by the flowchart rules (module docstring) and the reason."""
    _, ratio, slices = _thick_axis(fp)
    if ratio >= THICK_SLICE_RATIO:
        return 2, f"thick slices ({slices}, >= {THICK_SLICE_RATIO:g}): 2D (reference study; nnU-Net ANISO_THRESHOLD)"
    if median_shape[2] < 2 * rules.FEATUREMAP_MIN_EDGE:
        return 2, f"median image has {median_shape[2]:g} slices (< {2 * rules.FEATUREMAP_MIN_EDGE}): cannot pool in 3D"
    elong = fp.median_elongation()
    if len(fp.subjects) <= SMALL_COHORT and all(e is not None and e >= TUBE_ELONGATION for e in elong):
        return 2, (
            f"{len(fp.subjects)} subjects (<= {SMALL_COHORT}) of tube- or line-shaped classes (median elongation "
            f"{elong} >= {TUBE_ELONGATION:g}): 2D (reference study)"
        )
    return 3, f"{slices} (< {THICK_SLICE_RATIO:g}); classes not tube-shaped (elongation {elong}): 3D"


def _slice_axis(rec: _Recorder, fp: DatasetFingerprint) -> int:
    """2D: the slice-axis decision (the thick axis, else axis 2); returns the axis that holds."""
    worst, ratio, slices = _thick_axis(fp)
    if ratio >= THICK_SLICE_RATIO:
        planned, why = worst, f"thick axis ({slices}, >= {THICK_SLICE_RATIO:g}): slices across axis {worst}"
    else:
        planned, why = 2, f"no thick axis ({slices}, < {THICK_SLICE_RATIO:g}): axis 2, the schema default"
    return check_slice_axis(rec.decide("segmentation.model.slice_axis", planned, why))


def _spacing(rec: _Recorder, fp: DatasetFingerprint) -> np.ndarray:
    """Target spacing decision; a typed ``null`` (keep each image's grid) plans with the median spacing."""
    target, why = rules.target_spacing(fp.spacings, fp.shapes_after_crop)
    value = rec.decide("preprocess.target_spacing_mm", [round(float(v), 5) for v in target], why)
    return np.median(fp.spacings, axis=0) if value is None else np.asarray(value, dtype=np.float64)


def _normalisation(rec: _Recorder, fp: DatasetFingerprint) -> None:
    """Per channel: CT -> ct_window on the foreground percentiles, else zscore (nnU-Net's schemes)."""
    method = rec.typed("preprocess.normalise.method")
    for name, modality, stats in zip(fp.channels, fp.modalities, fp.intensities, strict=True):
        if modality.upper() == "CT":
            lo, hi = round(stats.percentile_00_5, 1), round(stats.percentile_99_5, 1)
            value: dict[str, Any] = {"method": "ct_foreground", "percentiles": [0.5, 99.5]}
            why = (
                "CT: nnU-Net's CTNormalization, clip to the foreground's 0.5/99.5th percentiles (whole cohort: "
                f"[{lo}, {hi}] HU; refitted on each fold's training subjects) and z-score"
            )
        else:
            value, why = {"method": "zscore"}, f"{modality}: z-score (nnU-Net's scheme for non-CT channels)"
        key = f"preprocess.normalise.per_sequence.{name}"
        if method is not MISSING and rec.typed(key) is MISSING:
            why = f"preprocess.normalise.method {method!r} typed in config; plan: {json.dumps(value)}, {why}"
            rec.decisions[key] = Decision(key, {"method": method}, why, "override")
            continue
        rec.decide(key, value, why)


def _loss(rec: _Recorder, fp: DatasetFingerprint) -> None:
    """Loss name from the smallest class share, class weights from the imbalance."""
    shares = fp.median_class_share()
    small = min(shares)
    pct = [f"{100 * s:.3g} %" for s in shares]
    if small < SMALL_TARGET_SHARE:
        rec.decide("segmentation.loss.name", "dice_focal", f"small target: class shares {pct} < 1 % (reference study)")
    else:
        rec.decide("segmentation.loss.name", "dice_ce", f"class shares {pct} >= {100 * SMALL_TARGET_SHARE:g} %")
    if small >= IMBALANCE_SHARE:
        rec.decide("segmentation.loss.class_weights", None, f"class shares {pct} >= {100 * IMBALANCE_SHARE:g} %")
        return
    background = max(1.0 - sum(shares), small)
    weights = [1.0] + [round(min(MAX_CLASS_WEIGHT, math.sqrt(background / max(s, 1e-12))), 3) for s in shares]
    why = f"imbalance: class shares {pct} < {100 * IMBALANCE_SHARE:g} %; sqrt(background / class), at most 10"
    rec.decide("segmentation.loss.class_weights", weights, why)


def _epochs(rec: _Recorder, budget: Budget, defaults: Mapping[str, Any], net: NetworkPlan) -> None:
    """Epochs that fit the time budget (ConfigError below one, naming the numbers)."""
    key = "segmentation.train.epochs"
    default = int(defaults["train"]["epochs"])
    if budget.minutes is None or budget.seconds_per_epoch is None:
        rec.decide(key, default, "no time budget or epoch timing given: schema default")
        return
    seconds = budget.minutes * 60.0
    n = math.floor(seconds / budget.seconds_per_epoch)
    iters = rec.typed("segmentation.train.iterations_per_epoch")
    iters = defaults["train"]["iterations_per_epoch"] if iters is MISSING else iters
    if n < 1 and rec.typed(key) is MISSING:
        raise ConfigError(
            f"time budget {budget.minutes:g} min ({seconds:.0f} s) is shorter than one epoch "
            f"({budget.seconds_per_epoch:.1f} s measured: {iters} iterations of batch {net.batch}, patch "
            f"{list(net.patch)}); raise the time budget or lower segmentation.train.iterations_per_epoch"
        )
    why = f"{seconds:.0f} s budget / {budget.seconds_per_epoch:.2f} s per epoch = {n}, at most {MAX_EPOCHS}"
    rec.decide(key, max(1, min(n, MAX_EPOCHS)), why)


def make_plan(fingerprint: DatasetFingerprint, *, overrides: Mapping[str, Any] | None = None, budget: Budget) -> Plan:
    """Plan the segmentation settings of a cohort (rules: module docstring).

    Parameters
    ----------
    fingerprint
        The labelled training subjects (:func:`medpipe.segment.dataset_fingerprint.compute_dataset_fingerprint`).
    overrides
        The config as the user typed it (before defaults are filled in): every planned key present in it keeps
        the typed value and is marked ``override``.
    budget
        Memory per training step and, optionally, training time and the measured seconds per epoch.

    Returns
    -------
    Plan

    Raises
    ------
    ConfigError
        When no patch fits the memory budget, or the time budget is shorter than one epoch (with the numbers).
    """
    rec = _Recorder(overrides)
    defaults = resolve_settings(None)
    spacing = _spacing(rec, fingerprint)
    new = [rules.compute_new_shape(s.shape_after_crop, s.spacing_mm, spacing) for s in fingerprint.subjects]
    full = [rules.compute_new_shape(s.shape, s.spacing_mm, spacing) for s in fingerprint.subjects]
    median_shape = np.median(np.asarray(new, dtype=np.float64), axis=0)
    rec.decide("segmentation.num_classes", fingerprint.n_classes, "largest label value + 1 (background included)")
    planned_dims, dims_why = _dims(fingerprint, median_shape)
    typed_arch = rec.typed("segmentation.model.architecture")
    dims = planned_dims if typed_arch is MISSING else (2 if typed_arch == "unet2d" else 3)
    dataset_voxels = float(np.prod(median_shape)) * len(fingerprint.subjects)
    axis = _slice_axis(rec, fingerprint) if dims == 2 else 2
    net, decisions = plan_network(
        rec.typed, dims, spacing, median_shape, budget.memory_mb, dataset_voxels, defaults, slice_axis=axis
    )
    arch, arch_why = ("unet2d" if planned_dims == 2 else "unet3d"), dims_why
    if dims == 3:
        geometry = (spacing, median_shape, np.max(np.asarray(full, dtype=np.float64), axis=0))
        net, decisions, arch3, why = plan_cascade(
            rec.typed, net, decisions, geometry, budget.memory_mb, dataset_voxels, defaults
        )
        if planned_dims == 3:
            arch, arch_why = arch3, f"{dims_why}; {why}"
    rec.decide("segmentation.model.architecture", arch, arch_why)
    for key, value, rule in decisions:
        rec.decide(key, value, rule)
    rec.decide("segmentation.model.squeeze_excitation", True, "reference study: SE blocks help in most cases")
    _normalisation(rec, fingerprint)
    _loss(rec, fingerprint)
    _epochs(rec, budget, defaults, net)
    inputs = {
        "n_subjects": len(fingerprint.subjects),
        "channels": list(fingerprint.channels),
        "modalities": list(fingerprint.modalities),
        "median_spacing_mm": [round(float(v), 5) for v in np.median(fingerprint.spacings, axis=0)],
        "median_shape_after_crop": [float(v) for v in np.median(fingerprint.shapes_after_crop, axis=0)],
        "median_shape_at_target": [float(v) for v in median_shape],
        "median_class_share": fingerprint.median_class_share(),
        "budget": asdict(budget),
    }
    return Plan(tuple(rec.decisions[k] for k in sorted(rec.decisions)), inputs)
