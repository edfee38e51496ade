"""The ``fingerprint`` and ``plan`` rules: the labelled training subjects' dataset fingerprint, and the plan made
from it (:mod:`.plan`) with the machine's memory and, with ``segmentation.budget_minutes``, the time of a few
training steps of the planned network (:mod:`.plan_measure`).

The plan is written as ``plan.json`` (:class:`medpipe.core.plan_record.Plan`) and as a table for the report
(``plan.tsv``: key, value, source, rule). Every stage whose settings it decides reads ``plan.json``
(:func:`medpipe.core.plan_record.planned_settings`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.plan_record import Plan
from medpipe.core.records import read_modality
from medpipe.segment.dataset_fingerprint import DatasetFingerprint, compute_dataset_fingerprint
from medpipe.segment.plan import Budget, make_plan
from medpipe.segment.plan_measure import plan_memory_mb, seconds_per_epoch
from medpipe.segment.settings import resolve_settings

logger = logging.getLogger(__name__)

#: Halvings of the memory budget tried to fit the schema's default epochs into the time budget.
MAX_HALVINGS = 6


def _per_subject(flat: Sequence[str], n: int) -> list[list[str]]:
    """A flat, subject-major list (``n`` channels each) as one list per subject."""
    return [list(flat[i : i + n]) for i in range(0, len(flat), n)]


def channel_modalities(
    converted: Sequence[Sequence[str]], subjects: Sequence[str], channels: Sequence[str]
) -> list[str]:
    """The modality of each channel from the converted images' sidecars; the same for every subject.

    Raises
    ------
    DataError
        Naming the subject, the file and both modalities when a channel's modality differs between subjects.
    """
    first: list[str] = []
    for subject, paths in zip(subjects, converted, strict=True):
        found = [read_modality(p, subject=subject).modality for p in paths]
        if not first:
            first = found
            continue
        for channel, mine, theirs, path in zip(channels, found, first, paths, strict=True):
            if mine != theirs:
                raise DataError(
                    f"sequence {channel!r} is {mine} here but {theirs} in subject {subjects[0]!r}: one channel of "
                    "the network must hold one modality",
                    subject=subject,
                    path=path,
                )
    return first


def write_fingerprint(
    images: Sequence[str],
    labels: Sequence[str],
    converted: Sequence[str],
    out: str | Path,
    *,
    subjects: Sequence[str],
    channels: Sequence[str],
) -> DatasetFingerprint:
    """Fingerprint of the training subjects (rule ``fingerprint``), written as JSON to ``out``.

    Parameters
    ----------
    images, converted
        Flat, subject-major lists in channel order: the images that go into resampling, and the converted images
        whose sidecars record each channel's modality.
    labels
        Each subject's human label on its images' grid.
    out
        ``fingerprint.json``.
    subjects, channels
        The training subjects (order of ``labels``) and the channels (sequences).
    """
    n = len(channels)
    per_image, per_converted = _per_subject(images, n), _per_subject(converted, n)
    if len(images) != n * len(subjects):
        raise DataError(
            f"{len(images)} images for {len(subjects)} subjects x {n} channels {list(channels)}: every training "
            "subject needs one image per channel"
        )
    modalities = channel_modalities(per_converted, subjects, channels)
    fp = compute_dataset_fingerprint(
        per_image, list(labels), subjects=list(subjects), channels=list(channels), modalities=modalities
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(fp.to_json(), indent=2, sort_keys=True) + "\n")
    return fp


def _write_table(plan: Plan, memory_why: str, out: str | Path) -> None:
    """``plan.tsv``: one row per decision, then the memory budget's row."""
    with Path(out).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["key", "value", "source", "rule"], delimiter="\t")
        writer.writeheader()
        writer.writerows(plan.table())
        budget = plan.inputs["budget"]
        writer.writerow(
            {"key": "(memory budget)", "value": f"{budget['memory_mb']:.0f}", "source": "plan", "rule": memory_why}
        )


def _fit_time(
    fp: DatasetFingerprint, typed: Mapping[str, Any], plan: Plan, budget: Budget, minutes: float, memory_why: str
) -> tuple[Plan, Budget, str]:
    """Time the network of ``plan`` (made with ``budget``); while fewer than the schema's default epochs fit the
    time budget (a CPU, or a large image), halve the memory budget (a smaller patch or batch) and re-plan, at most
    :data:`MAX_HALVINGS` times. The time budget then decides the epochs; the last memory budget's reason says how
    it was reached."""
    wanted = int(resolve_settings(None)["train"]["epochs"])
    seconds_at: list[str] = []

    def timed(candidate: Plan, memory_mb: float) -> float:
        seconds = round(seconds_per_epoch(candidate.config()["segmentation"], len(fp.channels)), 3)
        patch = candidate.value("segmentation.train.patch_size")
        seconds_at.append(f"{memory_mb:.0f} MiB: patch {patch}, {seconds:g} s")
        return seconds

    seconds = timed(plan, budget.memory_mb)
    for _ in range(MAX_HALVINGS):
        if minutes * 60.0 / seconds >= wanted:
            break
        smaller = replace(budget, memory_mb=budget.memory_mb / 2)
        try:
            candidate = make_plan(fp, overrides=typed, budget=smaller)
        except ConfigError:  # no patch fits half the memory: keep the last plan
            break
        budget, plan = smaller, candidate
        seconds = timed(plan, budget.memory_mb)
    if len(seconds_at) > 1:
        memory_why = (
            f"{memory_why}; halved until {wanted} epochs (schema default) fit the {minutes:g} min budget: "
            + "; ".join(seconds_at)
        )
    budget = replace(budget, minutes=minutes, seconds_per_epoch=seconds)
    return make_plan(fp, overrides=typed, budget=budget), budget, memory_why


def write_plan(
    fingerprint: str | Path,
    out_plan: str | Path,
    out_table: str | Path,
    *,
    typed_config: Mapping[str, Any],
    budget_minutes: float | None,
    memory_mb: float | None,
    threads: int = 1,
) -> Plan:
    """Plan the run from its fingerprint (rule ``plan``).

    Parameters
    ----------
    fingerprint
        ``fingerprint.json`` (:func:`write_fingerprint`).
    out_plan, out_table
        ``plan.json`` and ``plan.tsv``.
    typed_config
        The config as the user typed it, before the schema's defaults: its planned keys are overrides.
    budget_minutes
        Training time of one fold model (``segmentation.budget_minutes``); ``None`` keeps the typed or default
        number of epochs.
    memory_mb
        ``segmentation.plan_memory_mb`` (``None``: :func:`~medpipe.segment.plan_measure.plan_memory_mb`).
    threads
        Torch threads while the planned network's training steps are timed (those of a train job).

    Raises
    ------
    ConfigError
        When no patch fits the memory budget or the time budget is shorter than one epoch (with the numbers).
    """
    fp = DatasetFingerprint.from_json(json.loads(Path(fingerprint).read_text()))
    memory, memory_why = plan_memory_mb(memory_mb)
    budget = Budget(memory_mb=memory)
    plan = make_plan(fp, overrides=typed_config, budget=budget)
    if budget_minutes is not None:
        torch.set_num_threads(max(1, threads))
        plan, budget, memory_why = _fit_time(fp, typed_config, plan, budget, float(budget_minutes), memory_why)
    Path(out_plan).parent.mkdir(parents=True, exist_ok=True)
    Path(out_plan).write_text(plan.to_json())
    _write_table(plan, memory_why, out_table)
    overrides = sum(d.source == "override" for d in plan.decisions)
    logger.info("plan of %d decisions (%d typed in config) written to %s", len(plan.decisions), overrides, out_plan)
    return plan
