"""The preprocess settings come from the config schema: defaults, allowed values and the code's dispatch tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from medpipe.core.config import allowed_values, normalise_settings, section_schema, with_defaults
from medpipe.core.errors import ConfigError
from medpipe.core.io import nib_to_ants
from medpipe.core.resample import INTERPOLATIONS
from medpipe.preprocess import n4, normalise, skullstrip
from medpipe.preprocess.coregister import _initial_transform, _settings, register_linear


def _phantom(shift: float = 0.0) -> nib.Nifti1Image:
    idx = np.indices((24, 22, 20)).astype(np.float64)
    r2 = ((idx[0] - 11.5 - shift) / 8) ** 2 + ((idx[1] - 10.5) / 6) ** 2 + ((idx[2] - 9.5) / 5) ** 2
    inner = ((idx[0] - 13.5 - shift) / 3) ** 2 + ((idx[1] - 10.5) / 2.5) ** 2 + ((idx[2] - 8.5) / 2) ** 2
    data = 100.0 * (r2 < 1) + 60.0 * (inner < 1) + 10.0 * idx[1] / 22 * (r2 < 1)
    return nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.mark.parametrize(
    ("table", "key"),
    [
        (normalise.METHODS, ("normalise", "method")),
        (skullstrip.METHODS, ("skullstrip", "method")),
        (n4.FIT_MASKS, ("n4", "mask")),
    ],
    ids=["normalise.method", "skullstrip.method", "n4.mask"],
)
def test_dispatch_tables_match_the_schema_enum(table: dict[str, Any], key: tuple[str, str]) -> None:
    assert sorted(table) == sorted(allowed_values("preprocess", *key))


def test_normalise_interpolations_are_ones_resampling_offers() -> None:
    assert set(allowed_values("preprocess", "normalise", "interpolation")) <= set(INTERPOLATIONS)
    override = section_schema("preprocess", "normalise", "per_sequence")["additionalProperties"]
    assert override["then"]["enum"] == allowed_values("preprocess", "normalise", "method")
    assert override["else"]["properties"]["method"]["enum"] == allowed_values("preprocess", "normalise", "method")
    assert override["else"]["properties"]["interpolation"]["enum"] == allowed_values(
        "preprocess", "normalise", "interpolation"
    )
    # Overrides carry no defaults of their own: a default there would overwrite the section's value.
    assert not [k for k, v in override["else"]["properties"].items() if "default" in v]
    assert set(override["else"]["properties"]) == set(section_schema("preprocess", "normalise")["properties"]) - {
        "per_sequence"
    }


@pytest.mark.parametrize("how", allowed_values("preprocess", "coregister", "initialization"))
def test_every_initialization_of_the_schema_is_implemented(tmp_path: Path, how: str) -> None:
    fixed, moving = nib_to_ants(_phantom()), nib_to_ants(_phantom(shift=2.0))
    initial = _initial_transform(fixed, moving, how, tmp_path)
    assert initial is None or isinstance(initial, list)


@pytest.mark.parametrize("metric", allowed_values("preprocess", "coregister", "metric"))
@pytest.mark.parametrize("transform", allowed_values("preprocess", "coregister", "transform"))
def test_every_metric_and_transform_of_the_schema_runs_in_ants(tmp_path: Path, metric: str, transform: str) -> None:
    quick = {
        "metric": metric,
        "transform": transform,
        "iterations": [5],
        "shrink_factors": [1],
        "smoothing_sigmas": [0],
    }
    moved, mat = register_linear(_phantom(), _phantom(shift=1.0), quick, seed=1, workdir=tmp_path)
    assert moved.shape == (24, 22, 20) and Path(mat).is_file()


@pytest.mark.parametrize("section", ["coregister", "n4", "skullstrip", "normalise"])
def test_missing_keys_take_the_schema_defaults(section: str) -> None:
    defaults = {k: v["default"] for k, v in section_schema("preprocess", section)["properties"].items()}
    assert with_defaults({}, "preprocess", section) == defaults
    if section == "coregister":
        assert _settings({}) == defaults
    if section == "normalise":
        assert normalise_settings({}, "T1w") == {k: v for k, v in defaults.items() if k != "per_sequence"}


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda: _settings({"metric": "GC"}), r"preprocess\.coregister\.metric"),
        (lambda: _settings({"initialization": "centre"}), r"preprocess\.coregister\.initialization"),
        (lambda: _settings({"iterations": [10, 5]}), r"preprocess\.coregister: iterations"),
        (lambda: _settings({"sampling_rate": 0.2, "smapling_rate": 0.3}), r"preprocess\.coregister.*smapling_rate"),
        (lambda: with_defaults({"mask": "li"}, "preprocess", "n4"), r"preprocess\.n4\.mask"),
        (lambda: with_defaults({"method": "bet2"}, "preprocess", "skullstrip"), r"preprocess\.skullstrip\.method"),
        (lambda: normalise_settings({"interpolation": "cubic"}, None), r"preprocess\.normalise\.interpolation"),
        (
            lambda: normalise_settings({"per_sequence": {"CT": {"method": "hu"}}}, "CT"),
            r"preprocess\.normalise\.per_sequence\.CT\.method",
        ),
    ],
)
def test_invalid_values_are_config_errors_naming_the_key(call: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        call()


def test_per_sequence_override_by_method_name_or_mapping() -> None:
    settings = {
        "method": "zscore",
        "percentiles": [1, 99],
        "per_sequence": {"T2w": "percentile", "CT": {"window_hu": [-100, 200]}},
    }
    t2 = normalise_settings(settings, "T2w")
    assert t2["method"] == "percentile" and t2["percentiles"] == [1, 99]
    ct = normalise_settings(settings, "CT")
    assert ct["method"] == "zscore" and ct["window_hu"] == [-100, 200] and ct["percentiles"] == [1, 99]
    assert settings["per_sequence"] == {"T2w": "percentile", "CT": {"window_hu": [-100, 200]}}  # input untouched
