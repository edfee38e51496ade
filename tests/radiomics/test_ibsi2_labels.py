"""IBSI-2 labels of the feature table: filter text and compliance per image type, derived from ibsi2.TESTS."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from medpipe.radiomics import ibsi2, ibsi2_phase2
from medpipe.radiomics.extract import load_params
from medpipe.radiomics.ibsi2_labels import (
    FAMILY_NAMES,
    FILTER_CODES,
    NO_CODE,
    NOT_ASSESSED,
    ORIGINAL_COMPLIANCE,
    ORIGINAL_FILTER,
    covering_tests,
    filter_configs,
    labels,
)
from medpipe.radiomics.ibsi_preprocess import IbsiSettings, target_spacing

REPO = Path(__file__).resolve().parents[2]
PARAMS = {name: REPO / "config" / "radiomics" / f"{name}.yaml" for name in ("mr", "ct")}
BANDS = ["HHH", "HHL", "HLH", "HLL", "LHH", "LHL", "LLH", "LLL"]
LEVEL_1 = "wavelet coif1 {} level 1 3D, periodic, not rotation invariant"
NO_INVARIANCE = "rotation invariance (mean pooling over rotations): pyradiomics has none"
COMPLIANT_L1 = f"compliant (phase 1: 5.A.1, 6.A.1; phase 2: 6.B not expressible, {NO_INVARIANCE})"
LOG_PHASE2 = (
    "phase 2: 3.B fails, 3/18 features within tolerance (15/18 after dividing the map by its (sigma/spacing)^2 = 2.25)"
)


def _flip(test_id: str, status: ibsi2.Status) -> tuple[ibsi2.Ibsi2Test, ...]:
    assert any(t.test_id == test_id for t in ibsi2.TESTS)
    return tuple(dataclasses.replace(t, recorded=status) if t.test_id == test_id else t for t in ibsi2.TESTS)


def _pyradiomics_names(params: dict[str, Any]) -> set[str]:
    """Image type names pyradiomics itself yields for the params' LoG and Wavelet entries (tiny image)."""
    from radiomics import imageoperations

    image = sitk.GetImageFromArray(np.random.default_rng(0).random((12, 12, 12)))
    image.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray(np.ones((12, 12, 12), np.uint8))
    names = set()
    for kind in ("LoG", "Wavelet"):
        if kind in params["imageType"]:
            kwargs = {**params.get("setting", {}), **(params["imageType"][kind] or {})}
            names |= {name for _, name, _ in getattr(imageoperations, f"get{kind}Image")(image, mask, **kwargs)}
    return names


@pytest.mark.parametrize("name", ["mr", "ct"])
def test_every_image_type_of_the_params_files_is_labelled(name: str) -> None:
    params, ibsi = load_params(PARAMS[name])
    configs = filter_configs(params, ibsi.spacing_mm)
    assert set(configs) == _pyradiomics_names(params)  # the enumeration is pyradiomics' own naming
    got = labels(["original", *configs], params, ibsi.spacing_mm)
    assert set(got) == {"original", "log-sigma-2-0-mm-3D", "log-sigma-4-0-mm-3D", *(f"wavelet-{b}" for b in BANDS)}
    assert (got["original"].filter, got["original"].compliance) == ("none", "n/a (no filter)")
    for band in BANDS:
        assert got[f"wavelet-{band}"].filter == LEVEL_1.format(band)
        assert got[f"wavelet-{band}"].compliance == COMPLIANT_L1
    for sigma, factor in (("2", "(sigma/spacing)^2 is 1 here as sigma equals the 2 mm spacing"), ("4", "= 4 times")):
        log = got[f"log-sigma-{sigma}-0-mm-3D"]
        assert log.filter == f"LoG sigma={sigma}.0mm 3D, nearest"
        assert log.compliance.startswith("non-compliant (phase 1: 2.A: fails, its sigma^2 scale normalisation")
        assert factor in log.compliance and "kernel approximation also fails" in log.compliance
        assert log.compliance.endswith(f"; {LOG_PHASE2})")


def test_statuses_come_from_the_tests_table(monkeypatch: pytest.MonkeyPatch) -> None:
    params, ibsi = load_params(PARAMS["mr"])
    types = ["log-sigma-2-0-mm-3D", "wavelet-HHL"]
    recorded = {t.test_id: t.recorded for t in ibsi2.TESTS}
    assert (recorded["2.A"], recorded["5.A.1"], recorded["6.A.1"]) == ("fail", "pass", "pass")
    monkeypatch.setattr(ibsi2, "TESTS", _flip("2.A", "pass"))  # phase 2 (3.B fails) still makes it non-compliant
    log = labels(types, params, ibsi.spacing_mm)["log-sigma-2-0-mm-3D"].compliance
    assert log == f"non-compliant (phase 1: 2.A; {LOG_PHASE2})"
    monkeypatch.setattr(ibsi2, "TESTS", _flip("6.A.1", "fail"))
    wavelet = labels(types, params, ibsi.spacing_mm)["wavelet-HHL"]
    assert wavelet.compliance == (
        "non-compliant (phase 1: 6.A.1: fails, beyond 1 % of the reference map; passes 5.A.1; "
        f"phase 2: 6.B not expressible, {NO_INVARIANCE})"
    )
    assert wavelet.filter == LEVEL_1.format("HHL")  # the filter text does not depend on the results
    # an explicit table wins over the module's
    monkeypatch.undo()
    explicit = labels(types, params, ibsi.spacing_mm, tests=_flip("5.A.1", "fail"))["wavelet-HHL"].compliance
    assert explicit.startswith("non-compliant (phase 1: 5.A.1: fails, beyond 1 % of the reference map; passes 6.A.1;")


def _flip2(filter_id: str, **changes: Any) -> tuple[ibsi2_phase2.Phase2Config, ...]:
    assert filter_id in ibsi2_phase2.BY_ID
    return tuple(dataclasses.replace(c, **changes) if c.filter_id == filter_id else c for c in ibsi2_phase2.CONFIGS)


def test_phase2_results_come_from_the_phase2_table(monkeypatch: pytest.MonkeyPatch) -> None:
    params, ibsi = load_params(PARAMS["mr"])
    types = ["log-sigma-2-0-mm-3D", "wavelet-HHL"]
    monkeypatch.setattr(ibsi2, "TESTS", _flip("2.A", "pass"))
    passing = _flip2("3.B", recorded="pass", recorded_within=16, recorded_corrected=None)
    got = labels(types, params, ibsi.spacing_mm, phase2=passing)
    assert (
        got["log-sigma-2-0-mm-3D"].compliance
        == "compliant (phase 1: 2.A; phase 2: 3.B passes, 16/18 features within tolerance)"
    )
    failing = _flip2("6.B", recorded="fail", recorded_within=12, reason="")
    monkeypatch.setattr(ibsi2_phase2, "CONFIGS", failing)  # the module's table is read at call time
    wavelet = labels(types, params, ibsi.spacing_mm)["wavelet-HHL"].compliance
    assert wavelet == "non-compliant (phase 1: 5.A.1, 6.A.1; phase 2: 6.B fails, 12/18 features within tolerance)"
    assert labels(types, params, ibsi.spacing_mm, phase2=())["wavelet-HHL"].compliance == "compliant (5.A.1, 6.A.1)"


def test_the_covering_rules() -> None:
    params, _ = load_params(PARAMS["mr"])
    configs = filter_configs(params, (2.0, 2.0, 2.0))
    ids = {name: [t.test_id for t in covering_tests(c)] for name, c in configs.items()}
    assert ids["log-sigma-2-0-mm-3D"] == ["2.A"]  # 2.B asks mirror padding and was not run, 2.C is 2D
    assert ids["wavelet-LLL"] == ["5.A.1", "6.A.1"]  # 5.A.2, 6.A.2: rotation invariant, pyradiomics is not
    # a not-expressible test of another padding does not cover the configuration; one that was run does
    assert [t.test_id for t in covering_tests(configs["wavelet-LLL"], _flip("5.A.1", "not expressible"))] == ["6.A.1"]
    assert [t.test_id for t in covering_tests(configs["log-sigma-2-0-mm-3D"], _flip("2.B", "fail"))] == ["2.A", "2.B"]


@pytest.mark.parametrize(
    ("wavelet", "expected_levels"),
    [
        ({"start_level": 1, "level": 1}, {"wavelet-HHL": 2, "wavelet-LLL": 2}),
        ({"start_level": 0, "level": 2}, {"wavelet-HHL": 1, "wavelet2-HHL": 2, "wavelet2-LLL": 2}),
        ({"start_level": 1, "level": 2, "wavelet": "haar"}, {"wavelet-HHL": 2, "wavelet2-HHH": 3}),
    ],
)
def test_levels_above_one_are_not_expressible(wavelet: dict[str, Any], expected_levels: dict[str, int]) -> None:
    params = {"imageType": {"Wavelet": wavelet}, "setting": {}}
    configs = filter_configs(params)
    assert set(configs) == _pyradiomics_names(params)
    assert "wavelet-LLL" not in configs or wavelet["level"] == 1  # the approximation of the last level only
    got = labels(expected_levels, params)
    for name, level in expected_levels.items():
        assert f" level {level} 3D, periodic, not rotation invariant" in got[name].filter
        if level == 1:
            assert got[name].compliance == COMPLIANT_L1
        else:
            assert got[name].compliance.startswith("non-compliant (phase 1: 7.A.1, 7.A.2: not expressible, no a trous")
            assert got[name].compliance.endswith(
                f"; phase 2: 7.B not expressible, {NO_INVARIANCE}, and at level 2 no a trous dilation (pyradiomics "
                "repeats the level-1 filters))"
            )
            assert f"no a trous dilation at level {level}" in got[name].compliance
            assert "no rotation invariance" in got[name].compliance


def test_2d_wavelets_and_other_spacings() -> None:
    params = {"imageType": {"Wavelet": {}, "LoG": {"sigma": [3]}}, "setting": {"force2D": True}}
    assert set(filter_configs(params)) == _pyradiomics_names(params)  # LoG stays 3D under force2D
    got = labels(["wavelet-HL", "log-sigma-3-mm-3D"], params, (2.0, 2.0, 3.0))
    assert got["wavelet-HL"].filter == "wavelet coif1 HL level 1 2D, periodic, not rotation invariant"
    assert got["wavelet-HL"].compliance == (
        f"{NOT_ASSESSED} (no IBSI-2 phase-1 test of a 2D wavelet at level 1; "
        f"phase 2: 6.A not expressible, {NO_INVARIANCE})"
    )
    assert got["log-sigma-3-mm-3D"].filter == "LoG sigma=3.0mm 3D, nearest"
    assert (
        "(sigma/spacing)^2 = 2.25 / 2.25 / 1 along x / y / z (2x2x3 mm spacing)" in got["log-sigma-3-mm-3D"].compliance
    )
    unknown_grid = labels(["log-sigma-3-mm-3D"], params)["log-sigma-3-mm-3D"].compliance
    assert "(sigma/spacing)^2 times IBSI's" in unknown_grid


def test_spacing_the_filters_see() -> None:
    image = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    image.SetSpacing((0.8, 0.8, 3.0))
    assert target_spacing(image, IbsiSettings()) == (0.8, 0.8, 3.0)
    assert target_spacing(image, IbsiSettings(spacing_mm=(2.0, 2.0, 2.0))) == (2.0, 2.0, 2.0)
    assert target_spacing(image, IbsiSettings(spacing_mm=(2.0, 2.0, 2.0), in_plane=True)) == (2.0, 2.0, 3.0)


@pytest.mark.parametrize(
    "image_type", ["square", "squareroot", "logarithm", "exponential", "gradient", "lbp-2D", "lbp-3D-m1", "lbp-3D-k"]
)
def test_pyradiomics_types_without_an_ibsi2_filter(image_type: str) -> None:
    got = labels([image_type], {"imageType": {}})[image_type]
    assert (got.filter, got.compliance) == (f"not an IBSI-2 filter ({image_type})", NOT_ASSESSED)


@pytest.mark.parametrize("image_type", ["wavelet3-HHH", "log-sigma-5-0-mm-3D", "shearlet-1"])
def test_unknown_image_types_are_labelled_not_hidden(image_type: str, caplog: pytest.LogCaptureFixture) -> None:
    params, ibsi = load_params(PARAMS["mr"])  # yields neither a level-3 wavelet nor sigma 5
    with caplog.at_level(logging.WARNING):
        got = labels([image_type, "original"], params, ibsi.spacing_mm)
    assert (got[image_type].filter, got[image_type].compliance) == (f"unknown image type ({image_type})", NOT_ASSESSED)
    assert (got["original"].filter, got["original"].compliance) == (ORIGINAL_FILTER, ORIGINAL_COMPLIANCE)
    assert image_type in caplog.text


def test_docs_state_the_labels_of_the_params_files() -> None:
    """docs/IBSI2.md's feature-table example is what labels() gives for mr.yaml today."""
    doc = (REPO / "docs" / "IBSI2.md").read_text()
    params, ibsi = load_params(PARAMS["mr"])
    got = labels(filter_configs(params, ibsi.spacing_mm), params, ibsi.spacing_mm)
    for name in ("log-sigma-2-0-mm-3D", "log-sigma-4-0-mm-3D"):
        assert f"| {name} | {got[name].code} | {got[name].filter} | {got[name].compliance} |" in doc
    assert f"| {got['wavelet-HHL'].code} | wavelet " in doc
    assert f"| {got['wavelet-HHL'].compliance} |" in doc
    level2 = labels(["wavelet-HHL"], {"imageType": {"Wavelet": {"start_level": 1}}, "setting": {}})["wavelet-HHL"]
    assert f"`{level2.compliance}`" in doc


def test_ibsi2_codes_name_the_filter_family_of_each_image_type() -> None:
    """LoG rows carry L6PA, separable wavelets 25BO; the original image and non-IBSI transforms carry none."""
    params, ibsi = load_params(PARAMS["mr"])
    got = labels(["original", "log-sigma-2-0-mm-3D", "wavelet-LLH", "square"], params, ibsi.spacing_mm)
    codes = {name: lab.code for name, lab in got.items()}
    assert codes == {"original": NO_CODE, "log-sigma-2-0-mm-3D": "L6PA", "wavelet-LLH": "25BO", "square": NO_CODE}
    assert set(FILTER_CODES) >= set(FAMILY_NAMES)
    assert all(len(code) == 4 and code.isalnum() for code in FILTER_CODES.values())
