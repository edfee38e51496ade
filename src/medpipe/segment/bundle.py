"""Trained models as portable, verifiable bundles (rule ``bundle``; ``medpipe model export|verify``).

A bundle is a folder holding what a later run needs to use, check and cite the fold models of one
cross-validated training run, without that run's results folder::

    bundle.json                      the record (medpipe.segment.bundle_record.BundleRecord)
    MODEL_CARD.md                    generated from the record (medpipe.segment.card)
    manifest.json                    sha256 and size of every other file
    split/folds.json                 the split the models were trained with
    train/fold-K/model.pt            each fold's model, copied byte for byte,
    train/fold-K/model.pt.json       its train sidecar
    train/fold-K/learning_curve.tsv  and its learning curve (when given)
    evaluate/summary.tsv             the cross-validation summary (when given)
    evaluate/shift_reference.json    the domain-shift reference with its calibrated thresholds (when given;
                                     medpipe.evaluate.shift, applied to new subjects by an inference-only run)
    plan/plan.json, fingerprint.json the automatic plan and its dataset fingerprint (``segmentation.plan: auto``)

Where the recorded facts come from: the network settings, seed and per-fold training subjects from the
folds' train sidecars (``parameters`` is the resolved ``segmentation`` section; all folds must agree); the
per-channel normalisation and the target spacing from the normalise sidecars of the training images (what
ran, per sequence); the channel order from the caller, checked against the models' own record; the
training fingerprint from the training images and labels (:mod:`.fingerprint`); the label name from the
config. :func:`verify_bundle` re-hashes the files, :func:`load_bundle` verifies and reads the record;
:func:`medpipe.segment.compatible.check_compatible` compares it with a new run's config.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medpipe import __version__
from medpipe.core.errors import DataError
from medpipe.core.io import atomic_path, copy_file
from medpipe.core.sidecar import CORE_PACKAGES, package_versions, read_sidecar, sha256_file, sidecar_path, write_json
from medpipe.segment.bundle_record import RECORD_FILE, BundleRecord, FoldModel, ModelBundle, read_cv_summary
from medpipe.segment.card import model_card
from medpipe.segment.fingerprint import compute_fingerprint
from medpipe.segment.model import SEG_PACKAGES, load_model
from medpipe.segment.split import read_folds

logger = logging.getLogger(__name__)

#: ``format`` tag of manifest.json.
MANIFEST_FORMAT = "medpipe-bundle-manifest-1"
CARD_FILE, MANIFEST_FILE = "MODEL_CARD.md", "manifest.json"
#: The domain-shift reference inside a bundle (and inside a run's results folder).
SHIFT_REFERENCE_FILE = "evaluate/shift_reference.json"
#: Packages whose versions the bundle records at export (the train sidecars hold those of training).
BUNDLE_PACKAGES = (*CORE_PACKAGES, *SEG_PACKAGES)
#: Files neither hashed nor refused at the top of a bundle: Snakemake's empty mtime carrier, which it adds
#: to every ``directory()`` output after the job (the ``bundle`` rule's output is one).
UNHASHED = (MANIFEST_FILE, ".snakemake_timestamp")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read JSON: {exc}", path=path) from exc


def _channel_name(file_name: str) -> str:
    """``T1w.nii.gz`` (a model's recorded sequence file name) -> ``T1w``."""
    for ext in (".nii.gz", ".nii"):
        if file_name.endswith(ext):
            return file_name[: -len(ext)]
    return file_name


def _fold_entry(path: Path, split: Mapping[str, Any], channels: Sequence[str]) -> tuple[FoldModel, dict[str, Any]]:
    """The bundle entry and train sidecar of one fold's model, checked against the split and channels."""
    sidecar = read_sidecar(path)
    meta = load_model(path).meta
    fold = sidecar.get("fold")
    if sidecar.get("stage") != "train" or not isinstance(fold, int) or meta.get("fold") != fold:
        raise DataError(f"not a train-stage model sidecar of one fold (fold {fold!r})", path=sidecar_path(path))
    seqs = [_channel_name(str(s)) for s in meta.get("sequences", [])]
    if seqs != list(channels) or int(meta["in_channels"]) != len(channels):
        raise DataError(f"model was trained on channels {seqs}, the bundle is for {list(channels)}", path=path)
    if not 0 <= fold < len(split["folds"]):
        raise DataError(f"fold {fold} is not a fold of the split ({len(split['folds'])} folds)", path=path)
    row = split["folds"][fold]
    train = tuple(sorted(str(s) for s in sidecar.get("subjects", [])))
    if train != tuple(sorted(row["train"])):
        raise DataError(
            f"fold {fold} was trained on {list(train)} but the split lists {sorted(row['train'])}: the split "
            "changed after training; re-train or bundle the split the models were trained with",
            path=sidecar_path(path),
        )
    rel = f"train/fold-{fold}/model.pt"
    val, test = (tuple(str(s) for s in row.get(k, [])) for k in ("val", "test"))
    return FoldModel(fold, rel, train, val, test), sidecar


def _fold_entries(
    models: Sequence[str | Path], split: Mapping[str, Any], channels: Sequence[str], split_path: str | Path
) -> tuple[list[tuple[FoldModel, Path]], list[dict[str, Any]]]:
    """Every fold's entry (in fold order, with its file) and sidecar; the folds must be those of the split."""
    pairs = [(*_fold_entry(Path(m), split, channels), Path(m)) for m in models]
    pairs.sort(key=lambda p: p[0].fold)
    folds = [p[0].fold for p in pairs]
    if folds != list(range(len(split["folds"]))):
        raise DataError(
            f"models of folds {folds} given; the split has folds 0..{len(split['folds']) - 1}", path=split_path
        )
    first = pairs[0][1]
    for entry, sidecar, path in pairs[1:]:
        for key in ("parameters", "seed"):
            if sidecar.get(key) != first.get(key):
                raise DataError(
                    f"fold {entry.fold} was trained with other {key} than fold 0: not one training run",
                    path=sidecar_path(path),
                )
    return [(e, p) for e, _, p in pairs], [s for _, s, _ in pairs]


def _normalisation(
    images: Sequence[Sequence[str | Path]], subjects: Sequence[str], channels: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], list[float] | None]:
    """Per-channel normalise settings and the target spacing, from the training images' sidecars."""
    per_channel: dict[str, dict[str, Any]] = {}
    spacings: dict[str, Any] = {}
    for subject, paths in zip(subjects, images, strict=True):
        if len(paths) != len(channels):
            raise DataError(f"{len(paths)} images for the channels {list(channels)}", subject=subject)
        for channel, image in zip(channels, paths, strict=True):
            sidecar = read_sidecar(image, subject=subject)
            if sidecar.get("stage") != "normalise":
                raise DataError(
                    f"sidecar is from stage {sidecar.get('stage')!r}; the bundle needs the normalised training "
                    "images (results/normalise)",
                    subject=subject,
                    path=sidecar_path(image),
                )
            params = dict(sidecar.get("parameters", {}))
            spacings[json.dumps(params.pop("target_spacing_mm", None))] = image
            first = per_channel.setdefault(channel, params)
            if params != first:
                raise DataError(
                    f"{channel} normalised with {params}, other subjects' {channel} with {first}",
                    subject=subject,
                    path=sidecar_path(image),
                )
    if len(spacings) > 1:
        raise DataError(f"training images made with several target spacings: {sorted(spacings)}", path=images[0][0])
    spacing: list[float] | None = json.loads(next(iter(spacings))) if spacings else None
    return per_channel, spacing


def _trained_settings(sidecar: Mapping[str, Any], model: Path) -> dict[str, Any]:
    """The ``segmentation`` settings a fold was trained with, as its sidecar records them.

    Not re-resolved: a default added to the schema later must not rewrite the record of an old model.
    """
    settings = sidecar.get("parameters")
    train = settings.get("train") if isinstance(settings, dict) else None
    patch = train.get("patch_size") if isinstance(train, dict) else None
    if (
        not isinstance(settings, dict)
        or not isinstance(patch, list)
        or not isinstance(settings.get("num_classes"), int)
    ):
        raise DataError(
            "train sidecar records no segmentation settings (parameters.train.patch_size, parameters.num_classes)",
            path=sidecar_path(model),
        )
    return dict(settings)


def _training_device(sidecar: Mapping[str, Any]) -> str:
    """The device training ran on, as far as the train sidecar tells (a CPU build of torch has no GPU)."""
    if sidecar.get("device"):
        return str(sidecar["device"])
    torch_version = str(sidecar.get("software", {}).get("torch", ""))
    return "cpu" if torch_version.endswith("+cpu") else "not recorded by the train stage"


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside ``out`` that becomes ``out`` when the block succeeds (never half a bundle)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*"):  # left by a killed export (its only writer)
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield stage
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is meant to be shared
        if out.is_dir():
            out.rmdir()  # empty (checked before): Snakemake may create a directory() output's folder
        os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def _bundle_files(root: Path) -> dict[str, Path]:
    """Every file under ``root`` except :data:`UNHASHED`, keyed by POSIX path relative to ``root``."""
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    return {rel: p for rel, p in files.items() if rel not in UNHASHED}


def _write_manifest(root: Path) -> Path:
    files = {rel: {"sha256": sha256_file(p), "size": p.stat().st_size} for rel, p in _bundle_files(root).items()}
    return write_json({"format": MANIFEST_FORMAT, "files": files}, root / MANIFEST_FILE)


def write_bundle(
    out_dir: str | Path,
    *,
    models: Sequence[str | Path],
    split: str | Path,
    images: Sequence[Sequence[str | Path]],
    labels: Sequence[str | Path],
    subjects: Sequence[str],
    channels: Sequence[str],
    label_name: str | None = None,
    curves: Sequence[str | Path] = (),
    cv_summary: str | Path | None = None,
    shift_reference: str | Path | None = None,
    plan_files: Sequence[str | Path] = (),
) -> Path:
    """Write the bundle of one training run (layout: module docstring) and return its folder.

    Parameters
    ----------
    out_dir
        The bundle folder; it must not exist or be empty. Written beside it, then renamed into place.
    models
        Every fold's ``model.pt`` (its train sidecar ``model.pt.json`` beside it), any order.
    split
        ``folds.json`` of the run (:func:`medpipe.segment.split.write_folds`).
    images, labels, subjects
        Per subject of the split, its normalised images in channel order (their normalise sidecars beside
        them) and its label on the same grid: the fingerprint's input.
    channels
        Sequence names in channel order; they must be those the models record.
    label_name
        Name of the segmented structure (``config["label"]["name"]``), ``None`` when unknown.
    curves
        Learning-curve TSVs, one per model in the order of ``models`` (or none).
    cv_summary
        Cross-validation summary TSV (``results/evaluate/summary.tsv``), optional.
    shift_reference
        Domain-shift reference (``results/evaluate/shift_reference.json``), optional; copied byte for byte.
    plan_files
        ``plan.json`` and ``fingerprint.json`` of a planned run (``results/plan/``), copied to ``plan/``.

    Raises
    ------
    DataError
        Naming the file when an input is missing or contradicts another (fold, split, channels, settings).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError("bundle folder exists and is not empty: remove it or choose another", path=out)
    if not (len(images) == len(labels) == len(subjects)):
        raise DataError(f"{len(subjects)} subjects, {len(images)} image lists and {len(labels)} labels given")
    table = read_folds(split)
    if sorted(str(s) for s in subjects) != sorted(table["assignment"]):
        raise DataError(
            f"subjects {sorted(subjects)} are not those of the split {sorted(table['assignment'])}", path=split
        )
    if curves and len(curves) != len(models):
        raise DataError(f"{len(curves)} learning curves for {len(models)} models", path=curves[0])
    folds, sidecars = _fold_entries(models, table, channels, split)
    normalisation, spacing = _normalisation(images, subjects, channels)
    settings = _trained_settings(sidecars[0], folds[0][1])
    record = BundleRecord(
        channels=tuple(channels),
        normalisation=normalisation,
        target_spacing_mm=None if spacing is None else tuple(float(v) for v in spacing),
        patch_size=tuple(int(v) for v in settings["train"]["patch_size"]),
        num_classes=int(settings["num_classes"]),
        label_name=label_name,
        settings=settings,
        seed=int(sidecars[0]["seed"]),
        subjects=tuple(sorted(str(s) for s in subjects)),
        folds=tuple(entry for entry, _ in folds),
        fingerprint=compute_fingerprint(
            [[str(p) for p in imgs] for imgs in images], [str(p) for p in labels], subjects=subjects, channels=channels
        ),
        cv_metrics=read_cv_summary(cv_summary) if cv_summary is not None else (),
        training_device=_training_device(sidecars[0]),
        training_software={"medpipe": str(sidecars[0].get("medpipe_version")), **sidecars[0].get("software", {})},
        software={"medpipe": __version__, **package_versions(BUNDLE_PACKAGES)},
    )
    curve_of = {Path(m): Path(c) for m, c in zip(models, curves, strict=False)}
    copies = {"split/folds.json": Path(split)}
    for entry, path in folds:
        copies[entry.model] = path
        copies[entry.model + ".json"] = sidecar_path(path)
        if path in curve_of:
            copies[f"train/fold-{entry.fold}/learning_curve.tsv"] = curve_of[path]
    if cv_summary is not None:
        copies["evaluate/summary.tsv"] = Path(cv_summary)
    if shift_reference is not None:
        copies[SHIFT_REFERENCE_FILE] = Path(shift_reference)
    copies.update({f"plan/{Path(p).name}": Path(p) for p in plan_files})
    with _staging(out) as stage:
        for rel, source in copies.items():
            copy_file(source, stage / rel)
        write_json(record.to_json(), stage / RECORD_FILE)
        with atomic_path(stage / CARD_FILE) as tmp:
            tmp.write_text(model_card(record))
        _write_manifest(stage)
    logger.info("wrote bundle %s: %d fold models, %d subjects, channels %s", out, len(folds), len(subjects), channels)
    return out


def export_run(results_dir: str | Path, out_dir: str | Path, *, label_name: str | None = None) -> Path:
    """Bundle the models of a finished run's results folder (``medpipe model export``).

    Reads the run's layout (docs/ARCHITECTURE.md): ``split/folds.json``, ``train/fold-K/model.pt`` (+ sidecar,
    learning curve), ``normalise/sub-X/`` images and labels, and ``evaluate/summary.tsv`` when present. The
    channel order is the one the models record.

    Raises
    ------
    DataError
        Naming the first fold model that is missing.
    """
    results = Path(results_dir)
    split = results / "split" / "folds.json"
    table = read_folds(split)
    models = [results / "train" / f"fold-{k}" / "model.pt" for k in range(len(table["folds"]))]
    for model in models:
        if not model.is_file():
            raise DataError("fold model missing: the run has not finished training", path=model)
    channels = [_channel_name(str(s)) for s in load_model(models[0]).meta["sequences"]]
    subjects = sorted(table["assignment"])
    grid = results / "normalise"
    curves = [m.with_name("learning_curve.tsv") for m in models]
    summary = results / "evaluate" / "summary.tsv"
    return write_bundle(
        out_dir,
        models=models,
        split=split,
        images=[[grid / f"sub-{s}" / f"sub-{s}_{c}.nii.gz" for c in channels] for s in subjects],
        labels=[grid / f"sub-{s}" / f"sub-{s}_desc-human_mask.nii.gz" for s in subjects],
        subjects=subjects,
        channels=channels,
        label_name=label_name,
        curves=curves if all(c.is_file() for c in curves) else (),
        cv_summary=summary if summary.is_file() else None,
        shift_reference=shift if (shift := results / SHIFT_REFERENCE_FILE).is_file() else None,
        plan_files=sorted((results / "plan").glob("*.json")),
    )


def verify_bundle(path: str | Path) -> str:
    """Re-hash every file of a bundle against its manifest; return the manifest's sha256 (the bundle's id).

    Raises
    ------
    DataError
        Naming every file that changed, is missing or was added since the export (and the first one as
        the error's file), or the manifest when it cannot be read.
    """
    root = Path(path)
    manifest = root / MANIFEST_FILE
    if not root.is_dir():
        raise DataError("not a bundle folder", path=root)
    data = _read_json(manifest)
    listed = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(listed, dict):
        raise DataError(f"not a bundle manifest (expected format {MANIFEST_FORMAT!r})", path=manifest)
    present = _bundle_files(root)
    problems: list[tuple[str, str]] = []
    for rel in sorted(set(listed) | set(present)):
        if rel not in present:
            problems.append((rel, "listed in manifest.json but missing"))
        elif rel not in listed:
            problems.append((rel, "not listed in manifest.json (added after the export)"))
        elif not isinstance(listed[rel], dict) or sha256_file(present[rel]) != listed[rel].get("sha256"):
            problems.append((rel, "sha256 differs from manifest.json (changed after the export)"))
    if problems:
        lines = "; ".join(f"{rel}: {why}" for rel, why in problems)
        raise DataError(
            f"bundle failed verification ({len(problems)} file(s)): {lines}; re-export it from the run",
            path=root / problems[0][0],
        )
    logger.info("bundle %s verified: %d files match manifest.json", root, len(present))
    return sha256_file(manifest)


def load_bundle(path: str | Path) -> ModelBundle:
    """Verify a bundle (:func:`verify_bundle`), then read its record.

    Returns
    -------
    ModelBundle
        The folder, the :class:`BundleRecord` and the fold model files in fold order.
    """
    root = Path(path)
    verify_bundle(root)
    record = BundleRecord.from_json(_read_json(root / RECORD_FILE), path=root / RECORD_FILE)
    return ModelBundle(root=root, record=record, models=tuple(root / f.model for f in record.folds))
