"""The record of a model bundle (``bundle.json``) and its parts, defined once.

Written by :func:`medpipe.segment.bundle.write_bundle`, read by :func:`medpipe.segment.bundle.load_bundle`,
:mod:`.compatible` and :mod:`.card` (the model card). Only the segment stage and the CLI read a bundle, so the
record lives here rather than in :mod:`medpipe.core.records` (the records that cross stages). Its JSON keys
are the field names; nested records are objects, tuples are lists::

    {"format": "medpipe-bundle-1", "channels": ["T1w", "T2w"],
     "normalisation": {"T1w": {"method": "zscore", "percentiles": [0.5, 99.5], ...}, ...},
     "target_spacing_mm": [4.5, 4.5, 4.5], "patch_size": [24, 24, 24], "num_classes": 2, "label_name": "lesion",
     "settings": {...}, "seed": 7, "subjects": [...], "folds": [{"fold": 0, "model": "train/fold-0/model.pt",
     "train_subjects": [...], "validation_subjects": [], "test_subjects": [...]}, ...],
     "fingerprint": {...}, "cv_metrics": [{"label": "lesion", "metric": "dice", "n": 4, "mean": 0.81,
     "ci95_low": 0.7, "ci95_high": 0.9}, ...], "training_device": "cpu", "training_software": {...},
     "software": {...}}
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medpipe.core.errors import DataError
from medpipe.segment.fingerprint import TrainingFingerprint

#: ``format`` tag of bundle.json.
BUNDLE_FORMAT = "medpipe-bundle-1"


@dataclass(frozen=True)
class FoldModel:
    """One fold's model in a bundle: its file (relative to the bundle) and its subjects."""

    fold: int
    model: str
    train_subjects: tuple[str, ...]
    validation_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]


@dataclass(frozen=True)
class CvMetric:
    """One row of the cross-validation summary: mean and 95 % CI of a metric for one label."""

    label: str
    metric: str
    n: int
    mean: float | None
    ci95_low: float | None
    ci95_high: float | None


@dataclass(frozen=True)
class BundleRecord:
    """``bundle.json``: what prediction must match, and how and on what the models were trained.

    ``normalisation`` maps each channel to its normalise settings (``method``, ``percentiles``,
    ``window_hu``, ``interpolation``); ``settings`` is the resolved ``segmentation`` section;
    ``training_software`` comes from the train sidecar of fold 0, ``software`` from the export.
    """

    channels: tuple[str, ...]
    normalisation: dict[str, dict[str, Any]]
    target_spacing_mm: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    num_classes: int
    label_name: str | None
    settings: dict[str, Any]
    seed: int
    subjects: tuple[str, ...]
    folds: tuple[FoldModel, ...]
    fingerprint: TrainingFingerprint
    cv_metrics: tuple[CvMetric, ...]
    training_device: str
    training_software: dict[str, str]
    software: dict[str, str]
    format: str = BUNDLE_FORMAT

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (keys: the field names, nested records as objects)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, *, path: str | Path) -> BundleRecord:
        """Rebuild a record from :meth:`to_json` output; ``path`` (its file) is named in errors.

        Raises
        ------
        DataError
            When the format tag is another one, a key is missing or a value has the wrong type.
        """
        if not isinstance(data, Mapping) or data.get("format") != BUNDLE_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise DataError(f"bundle record format {found!r}, expected {BUNDLE_FORMAT!r}", path=path)
        try:
            spacing = data["target_spacing_mm"]
            return cls(
                channels=_strs(data["channels"]),
                normalisation={str(k): dict(v) for k, v in data["normalisation"].items()},
                target_spacing_mm=None if spacing is None else tuple(float(v) for v in spacing),
                patch_size=tuple(int(v) for v in data["patch_size"]),
                num_classes=int(data["num_classes"]),
                label_name=None if data["label_name"] is None else str(data["label_name"]),
                settings=dict(data["settings"]),
                seed=int(data["seed"]),
                subjects=_strs(data["subjects"]),
                folds=tuple(_fold_from_json(f) for f in data["folds"]),
                fingerprint=TrainingFingerprint.from_json(data["fingerprint"]),
                cv_metrics=tuple(CvMetric(**m) for m in data["cv_metrics"]),
                training_device=str(data["training_device"]),
                training_software={str(k): str(v) for k, v in data["training_software"].items()},
                software={str(k): str(v) for k, v in data["software"].items()},
            )
        except KeyError as exc:
            raise DataError(f"bundle record lacks the key {exc}", path=path) from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"bundle record has a malformed value: {exc}", path=path) from exc


def _strs(values: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _fold_from_json(f: Mapping[str, Any]) -> FoldModel:
    subjects = {k: _strs(f[k]) for k in ("train_subjects", "validation_subjects", "test_subjects")}
    return FoldModel(fold=int(f["fold"]), model=str(f["model"]), **subjects)


@dataclass(frozen=True)
class ModelBundle:
    """A verified bundle on disk (:func:`medpipe.segment.bundle.load_bundle`): folder, record, fold model files."""

    root: Path
    record: BundleRecord
    models: tuple[Path, ...]


def _cell(row: Mapping[str, str | None], key: str) -> float | None:
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return None
    return None if math.isnan(value) else value


def read_cv_summary(path: str | Path) -> tuple[CvMetric, ...]:
    """Rows of a cross-validation summary TSV (``label``, ``metric``, ``n``, ``mean``, ``ci95_low/high``).

    Raises
    ------
    DataError
        Naming the file and the column when a required column (label, metric, n, mean) is missing.
    """
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the cross-validation summary: {exc}", path=path) from exc
    if not rows:
        raise DataError("cross-validation summary has no rows", path=path)
    missing = [c for c in ("label", "metric", "n", "mean") if c not in rows[0]]
    if missing:
        raise DataError(f"cross-validation summary lacks the column(s) {missing}", path=path)
    if "set" in rows[0]:  # the evaluation summary per set: its cross-validation rows (set train)
        rows = [r for r in rows if r["set"] == "train"]
        if not rows:
            raise DataError("evaluation summary has no cross-validation rows (set train)", path=path)
    return tuple(
        CvMetric(
            label=str(r["label"]),
            metric=str(r["metric"]),
            n=int(_cell(r, "n") or 0),
            mean=_cell(r, "mean"),
            ci95_low=_cell(r, "ci95_low"),
            ci95_high=_cell(r, "ci95_high"),
        )
        for r in rows
    )


#: The record's file name inside a bundle.
RECORD_FILE = "bundle.json"


def read_bundle_unverified(path: str | Path) -> ModelBundle:
    """The bundle's record and fold model files *without* re-hashing them (no torch import either).

    For the jobs of an inference-only run only: the workflow's main process verified the bundle
    (:func:`medpipe.segment.compatible.bundle_for_run`) before it started any job.
    """
    import json

    root = Path(path)
    try:
        data = json.loads((root / RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the bundle record: {exc}", path=root / RECORD_FILE) from exc
    record = BundleRecord.from_json(data, path=root / RECORD_FILE)
    return ModelBundle(root=root, record=record, models=tuple(root / f.model for f in record.folds))
