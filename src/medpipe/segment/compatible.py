"""Is a new run's config compatible with a model bundle? Channels, normalisation, grid, patch size, classes.

A bundle's models only make sense on images prepared as their training images were: the same sequences in
the same order, normalised with the same method and parameters, on the same grid. :func:`check_compatible`
compares what the bundle records (:class:`medpipe.segment.bundle_record.BundleRecord`) with the run's config
and names every key that differs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medpipe.core.config import normalise_settings, with_defaults
from medpipe.core.errors import ConfigError
from medpipe.segment.bundle import load_bundle
from medpipe.segment.bundle_record import BundleRecord, ModelBundle
from medpipe.segment.settings import resolve_settings

logger = logging.getLogger(__name__)

#: Normalisation keys compared besides ``method`` and ``interpolation``, per method.
_METHOD_KEYS = {
    "percentile": ("percentiles",),
    "ct_window": ("window_hu",),
    "whitestripe": ("whitestripe_width", "whitestripe_contrast"),
}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and numbers as floats (1 == 1.0, [1, 2] == (1.0, 2.0))."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _compared(record: BundleRecord, run_config: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(config key, bundle value, run value) of every key prediction must match."""
    if "sequences" not in run_config:
        raise ConfigError("the run config has no sequences; check_compatible needs a workflow config")
    preprocess = with_defaults(run_config.get("preprocess"), "preprocess")
    seg = resolve_settings(run_config.get("segmentation"))
    run_channels = list(run_config["sequences"])
    rows: list[tuple[str, Any, Any]] = [("sequences", list(record.channels), run_channels)]
    for channel in (c for c in record.channels if c in run_channels):
        mine, theirs = record.normalisation.get(channel, {}), normalise_settings(preprocess["normalise"], channel)
        for key in ("method", "interpolation", *_METHOD_KEYS.get(str(mine.get("method")), ())):
            rows.append((f"preprocess.normalise.{key} (sequence {channel})", mine.get(key), theirs.get(key)))
    spacing = record.target_spacing_mm
    rows.append(
        ("preprocess.target_spacing_mm", None if spacing is None else list(spacing), preprocess["target_spacing_mm"])
    )
    rows.append(("segmentation.train.patch_size", list(record.patch_size), seg["train"]["patch_size"]))
    rows.append(("segmentation.num_classes", record.num_classes, seg["num_classes"]))
    return rows


def check_compatible(bundle: ModelBundle | BundleRecord, run_config: Mapping[str, Any]) -> None:
    """Refuse a run whose channels, normalisation, grid, patch size or classes differ from the bundle's.

    Parameters
    ----------
    bundle
        A loaded bundle or its record.
    run_config
        The new run's workflow config (missing keys take the schema's defaults).

    Raises
    ------
    ConfigError
        Listing every differing key with the bundle's and the run's value.
    """
    record = bundle.record if isinstance(bundle, ModelBundle) else bundle
    bad = [(key, mine, theirs) for key, mine, theirs in _compared(record, run_config) if _plain(mine) != _plain(theirs)]
    if bad:
        lines = "\n".join(f"  {key}: bundle {mine!r}, run {theirs!r}" for key, mine, theirs in bad)
        raise ConfigError(
            "the run's config does not match the model bundle (images must be prepared as the models were "
            f"trained: set these keys to the bundle's values or train new models):\n{lines}"
        )


def bundle_for_run(run_config: Mapping[str, Any], subjects: Sequence[str]) -> ModelBundle:
    """The verified, compatible bundle of an inference-only run (config ``segmentation.bundle``).

    Called when the workflow starts, so that a bad bundle stops the run before any job.

    Parameters
    ----------
    run_config
        The validated workflow config.
    subjects
        The run's subjects; those the bundle was trained on are named in a warning (their scores are not
        an independent validation).

    Raises
    ------
    DataError
        A bundle file changed, missing or added since the export (naming it).
    ConfigError
        A key where the run differs from the bundle, or ``postprocess.largest_component: auto``.
    """
    path = Path(run_config["segmentation"]["bundle"])
    bundle = load_bundle(path)
    check_compatible(bundle, run_config)
    if run_config.get("postprocess", {}).get("largest_component") == "auto":
        raise ConfigError(
            "postprocess.largest_component: auto needs cross-validation predictions, which an inference-only "
            f"run (segmentation.bundle: {str(path)!r}) has none of: set it to true or false"
        )
    seen = sorted(set(subjects) & set(bundle.record.subjects))
    if seen:
        logger.warning(
            "subject(s) %s have the IDs of subjects the bundle %s was trained on: if they are the same patients "
            "their scores are not an independent validation",
            seen,
            path,
        )
    logger.info("inference-only run: %d fold models of bundle %s", len(bundle.models), path)
    return bundle
