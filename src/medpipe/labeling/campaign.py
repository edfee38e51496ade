"""The labeling campaign of a run: initial set, candidate pool, held-out subjects, batches and schedule.

Read once from ``config["labeling"]`` and the subject sheet (:func:`campaign_from_config`) and checked there,
before any job: every subject named must be a labelled training subject of the sheet (simulation mode needs a
label for every candidate: it acts as the correction), explicit batches may not repeat a subject, and a round
needs a pool to draw from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medpipe.core.config import deep_merge
from medpipe.core.errors import ConfigError

#: File name of a correction in ``<corrections>/round-<r>/`` (and of the mask exported for editing).
CORRECTION_NAME = "sub-{subject}_mask.nii.gz"
#: The worklist a corrector may return into the round folder with ``correction_minutes`` filled in.
RETURNED_WORKLIST = "worklist.tsv"


@dataclass(frozen=True)
class Campaign:
    """Who is labelled when, and where corrections come from.

    Attributes
    ----------
    rounds
        Rounds to run (round ``r`` trains on the initial set plus the batches of rounds ``0..r-1``).
    mode
        ``human`` (corrections folder) or ``simulate`` (the sheet's labels act as the corrections).
    initial
        Subjects labelled before round 0.
    candidates
        Training subjects that may be selected for correction, in sheet order.
    held_out
        Labelled ``test`` subjects every round's model is scored on (never trained on).
    batch_size, strategy, seed
        Selection of the next batch (:func:`medpipe.labeling.select.select_batch`).
    batches
        Explicit batches per round (a round listed here ignores strategy and batch size).
    corrections
        Folder holding ``round-<r>/sub-<subject>_mask.nii.gz`` in human mode.
    """

    rounds: int
    mode: str
    initial: tuple[str, ...]
    candidates: tuple[str, ...]
    held_out: tuple[str, ...]
    batch_size: int
    strategy: str
    seed: int
    batches: tuple[tuple[str, ...], ...]
    corrections: str

    def explicit_batch(self, round_index: int) -> list[str]:
        """The configured batch of ``round_index`` (empty when the round is selected by strategy)."""
        return list(self.batches[round_index]) if round_index < len(self.batches) else []

    def correction_folder(self, round_index: int) -> Path:
        """``<corrections>/round-<r>``: where the corrector puts round ``r``'s masks."""
        return Path(self.corrections) / f"round-{round_index}"

    def correction_file(self, round_index: int, subject: str) -> Path:
        """The corrected mask expected for ``subject`` of round ``round_index`` (human mode)."""
        return self.correction_folder(round_index) / CORRECTION_NAME.format(subject=subject)


def _initial(labeling: Mapping[str, Any], train: Sequence[str], labelled: set[str]) -> tuple[str, ...]:
    named = list(labeling["initial"])
    if not named:
        named = [s for s in train if s in labelled][: int(labeling["initial_size"])]
    bad = [s for s in named if s not in train or s not in labelled]
    if bad:
        raise ConfigError(f"labeling.initial: {bad} are not labelled training subjects of the subject sheet")
    if not named:
        raise ConfigError("labeling: no labelled training subject to start round 0 from (sheet column label)")
    return tuple(named)


def _batches(labeling: Mapping[str, Any], candidates: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    seen: set[str] = set()
    for r, batch in enumerate(labeling["batches"]):
        bad = [s for s in batch if s not in candidates]
        if bad:
            raise ConfigError(
                f"labeling.batches[{r}]: {bad} are not candidates (training subjects not in the initial set)"
            )
        again = sorted(seen & set(batch))
        if again:
            raise ConfigError(f"labeling.batches[{r}]: {again} were already selected in an earlier batch")
        seen |= set(batch)
    return tuple(tuple(b) for b in labeling["batches"])


def campaign_from_config(
    labeling: Mapping[str, Any],
    *,
    sheet_order: Sequence[str],
    labelled: Sequence[str],
    sets: Mapping[str, str],
    seed: int,
) -> Campaign:
    """Build and check the campaign of ``config["labeling"]`` (``rounds >= 1``).

    Parameters
    ----------
    labeling
        ``config["labeling"]`` with the schema's defaults filled in.
    sheet_order
        Subjects of the run in the order of the subject sheet.
    labelled
        Subjects with a label (sheet column ``label``).
    sets
        Subject -> sheet column ``set`` (``train``, ``test``, ``external``).
    seed
        Master seed (random selection).

    Raises
    ------
    ConfigError
        A named subject is unknown or unlabelled, a batch repeats a subject, or the pool is empty.
    """
    has_label = set(labelled)
    train = [s for s in sheet_order if sets.get(s) == "train"]
    initial = _initial(labeling, train, has_label)
    candidates = [s for s in train if s not in initial]
    if labeling["mode"] == "simulate":
        missing = [s for s in candidates if s not in has_label]
        if missing:
            raise ConfigError(f"labeling.mode simulate: {missing} have no label to act as their correction")
    if not candidates:
        raise ConfigError(f"labeling: every training subject is in the initial set {list(initial)}: nothing to label")
    return Campaign(
        rounds=int(labeling["rounds"]),
        mode=str(labeling["mode"]),
        initial=initial,
        candidates=tuple(candidates),
        held_out=tuple(s for s in sheet_order if sets.get(s) == "test" and s in has_label),
        batch_size=int(labeling["batch_size"]),
        strategy=str(labeling["strategy"]),
        seed=int(seed),
        batches=_batches(labeling, candidates),
        corrections=str(labeling["corrections"]),
    )


def round_training_settings(
    segmentation: Mapping[str, Any], fine_tune: Mapping[str, Any], init_model: str | None
) -> dict[str, Any]:
    """``config["segmentation"]`` for one round's training.

    Round 0 (``init_model`` None) trains as configured. A later round with ``labeling.fine_tune.enabled``
    starts from ``init_model`` (``segmentation.train.init_checkpoint``) with the fine-tune schedule
    ``fine_tune`` (``labeling.fine_tune``: ``epochs``, ``learning_rate``; null keeps the segmentation value).
    Only this part of the labeling settings reaches the training job, so changing the selection strategy or the
    mode does not retrain a round.
    """
    if init_model is None:
        return deep_merge(dict(segmentation), {})
    tune = fine_tune
    train: dict[str, Any] = {"init_checkpoint": str(init_model)}
    if tune.get("epochs") is not None:
        train["epochs"] = int(tune["epochs"])
    if tune.get("learning_rate") is not None:
        train["learning_rate"] = float(tune["learning_rate"])
    return deep_merge(dict(segmentation), {"train": train})
