"""Settings of ``config["segmentation"]``: validated, with the defaults of the config schema filled in.

The defaults live in one place, the ``segmentation`` section of ``config/schemas/config.schema.yaml``
(read through :func:`medpipe.core.config.with_defaults`), so code called outside Snakemake (tests,
benchmarks) runs with the same settings as a workflow run.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import Any

from medpipe.core.config import deep_merge, with_defaults
from medpipe.core.errors import ConfigError

#: The config section these settings come from.
SECTION = "segmentation"
#: Array axes a 2D network may slice along (``segmentation.model.slice_axis``).
SLICE_AXES = (0, 1, 2)


def check_slice_axis(value: Any) -> int:
    """``segmentation.model.slice_axis`` as an int; ConfigError naming the value unless it is 0, 1 or 2."""
    if isinstance(value, bool) or value not in SLICE_AXES:
        raise ConfigError(f"segmentation.model.slice_axis = {value!r}; expected one of {SLICE_AXES}")
    return int(value)


def _interned(value: Any) -> Any:
    """``value`` with its keys and strings interned, as they would be had they been written in the code."""
    if isinstance(value, dict):
        return {sys.intern(k): _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return sys.intern(value) if isinstance(value, str) else value


@functools.cache
def _schema_defaults() -> dict[str, Any]:
    """Every default of the schema's ``segmentation`` section, in the schema's key order."""
    defaults: dict[str, Any] = _interned(with_defaults({}, SECTION))
    return defaults


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``settings`` and fill in the schema's defaults.

    Parameters
    ----------
    settings
        ``config["segmentation"]``, complete or partial (``None``: all defaults). The shorthand
        ``loss: "dice_ce"`` stands for ``loss: {name: dice_ce}``.

    Returns
    -------
    dict
        A new dict holding every key the segmentation engine reads, in the schema's key order.

    Raises
    ------
    medpipe.core.errors.ConfigError
        Naming every key the schema refuses (unknown keys, wrong types or values).
    """
    user = dict(settings or {})
    if isinstance(user.get("loss"), str):
        user["loss"] = {"name": user["loss"]}
    with_defaults(user, SECTION)  # validation: raises on any key or value the schema refuses
    # The result is pickled into model.pt, where key order and shared strings are part of the bytes: the
    # defaults (schema order, interned strings) are the base and the user's values replace theirs.
    return deep_merge(_schema_defaults(), user)
