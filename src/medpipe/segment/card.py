"""``MODEL_CARD.md`` of a model bundle, generated from its record: no number in it is written by hand.

Sections: model (network, channels, classes, grid, normalisation, training settings), data (subjects,
folds, training fingerprint), cross-validated performance (the bundled summary's means and 95 % CIs),
intended use and limits (device and software of training, the cohort, not for clinical use).
Numbers are printed with three decimals (:func:`number`); tests compare the card with the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medpipe.segment.bundle_record import BundleRecord


def number(value: float | None) -> str:
    """A metric or intensity as printed in the card (three decimals; ``n/a`` when missing)."""
    return "n/a" if value is None else f"{value:.3f}"


def _by(values: Sequence[Any], sep: str = " x ") -> str:
    return sep.join(str(v) for v in values)


def _span(lo: Any, hi: Any) -> str:
    """``lo to hi``, or one value when both are the same."""
    as_text = [_by(v) if isinstance(v, list | tuple) else str(v) for v in (lo, hi)]
    return as_text[0] if lo == hi else f"{as_text[0]} to {as_text[1]}"


def _structure(record: BundleRecord) -> str:
    return record.label_name or "class 1 (structure name not recorded)"


def _normalisation(record: BundleRecord) -> str:
    parts = []
    for channel in record.channels:
        s = record.normalisation.get(channel, {})
        method = str(s.get("method"))
        extra = {
            "percentile": f" (percentiles {s.get('percentiles')})",
            "ct_window": f" (window {s.get('window_hu')} HU)",
        }
        parts.append(f"{channel} {method}{extra.get(method, '')}")
    return "; ".join(parts)


def _model_section(record: BundleRecord) -> list[str]:
    seg, model, train = record.settings, record.settings["model"], record.settings["train"]
    loss = seg["loss"]["name"] if isinstance(seg["loss"], dict) else seg["loss"]
    spacing = record.target_spacing_mm
    grid = f"{_by(spacing)} mm voxels" if spacing is not None else "each case's reference-sequence grid"
    return [
        "## Model",
        f"- Network: {model['architecture']} (MONAI DynUNet), filters {model['channels']}, strides {model['strides']}; "
        f"{len(record.folds)} fold models of one cross-validated training run (ensemble).",
        f"- Input channels, in order: {', '.join(record.channels)}.",
        f"- Output classes: {record.num_classes} (0 background, 1 {_structure(record)}).",
        f"- Patch size: {_by(record.patch_size)} voxels; network grid: {grid}.",
        f"- Intensity normalisation: {_normalisation(record)}.",
        f"- Training: {train['epochs']} epochs of {train['iterations_per_epoch']} steps, batch {train['batch_size']}, "
        f"loss {loss}, learning rate {train['learning_rate']}, seed {record.seed}.",
    ]


def _data_section(record: BundleRecord) -> list[str]:
    fp = record.fingerprint
    sizes = [len(f.train_subjects) for f in record.folds]
    lines = [
        "## Data",
        f"- Subjects: {len(record.subjects)} (listed in bundle.json), split into {len(record.folds)} folds; "
        f"each fold's model was trained on {_span(min(sizes), max(sizes))} subjects of the other folds.",
        f"- Training images on the network grid: voxel size {_span(fp.spacing_mm_min, fp.spacing_mm_max)} mm, "
        f"image size {_span(fp.shape_min, fp.shape_max)} voxels ({fp.n_cases} cases).",
        "- Foreground intensity after normalisation, median [0.5th, 99.5th percentile]:",
    ]
    lines += [
        f"  - {c.channel}: {number(c.median)} [{number(c.percentile_00_5)}, {number(c.percentile_99_5)}] "
        f"({c.n_voxels} voxels sampled)"
        for c in fp.channels
    ]
    return lines


def _metrics_section(record: BundleRecord) -> list[str]:
    if not record.cv_metrics:
        return ["## Cross-validated performance", "No cross-validation results were bundled."]
    lines = [
        "## Cross-validated performance",
        "From evaluate/summary.tsv: every subject segmented by the fold model that never saw it, compared with its "
        "human mask; 95 % CI of the mean from the summary's bootstrap.",
        "",
        "| label | metric | n | mean | 95 % CI |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m.label} | {m.metric} | {m.n} | {number(m.mean)} | {number(m.ci95_low)} to {number(m.ci95_high)} |"
        for m in record.cv_metrics
    ]
    return lines


def _use_and_limits(record: BundleRecord) -> list[str]:
    sw = record.training_software
    n = len(record.subjects)
    return [
        "## Intended use",
        f"Research: automatic segmentation of {_structure(record)} in {', '.join(record.channels)} images prepared "
        "as bundle.json records (same channels, normalisation, grid and patch size; "
        "medpipe.segment.bundle.check_compatible refuses a run that differs), as input to radiomics and to "
        "human review.",
        "",
        "## Limits",
        "- Not for clinical use: not a medical device, not validated for diagnosis or treatment decisions.",
        f"- Trained on {record.training_device} with medpipe {sw.get('medpipe', 'n/a')}, "
        f"torch {sw.get('torch', 'n/a')}, MONAI {sw.get('monai', 'n/a')}.",
        f"- Cohort: the {n} subjects of one run only; on other scanners, protocols or populations, and on images "
        "outside the intensity and size ranges above, its performance is unknown.",
        f"- Cross-validation estimates and their confidence intervals rest on {n} subjects.",
    ]


def model_card(record: BundleRecord) -> str:
    """The Markdown model card of ``record`` (ends with a newline)."""
    head = [
        f"# Model card: medpipe segmentation of {_structure(record)}",
        "",
        f"Generated by medpipe {record.software.get('medpipe', 'n/a')} from bundle.json; every number below comes "
        "from the bundle's records.",
    ]
    sections = [head, _model_section(record), _data_section(record), _metrics_section(record), _use_and_limits(record)]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
