"""Domain-shift flags: distances, calibration on cross-validation, the flag table and its review records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from medpipe.audit.review import read_flag
from medpipe.core.errors import DataError
from medpipe.core.records import PROFILE_LEVELS, IntensityProfile
from medpipe.evaluate.shift import (
    CaseFacts,
    calibrate,
    intensity_distance,
    read_reference,
    shift_reference,
    volume_score,
    wasserstein_1,
    write_reference,
)
from medpipe.evaluate.shift_table import flag_performance, flag_table, write_review_records

SETTINGS = {"specificity": 0.95, "dice_fail": 0.5, "spacing_tolerance": 0.1}


def _profile(rng: np.random.Generator, *, sd: float = 1.0, gamma: float = 1.0) -> tuple[float, ...]:
    x = rng.normal(0.0, sd, 20_000)
    if gamma != 1.0:
        x = np.sign(x) * np.abs(x) ** gamma
    return IntensityProfile.of((x - x.mean()) / x.std()).quantiles


def _case(subject: str, rng: np.random.Generator, **kw: object) -> CaseFacts:
    base: dict[str, object] = {
        "subject": subject,
        "set": "train",
        "site": "A",
        "spacing_mm": (1.5, 1.5, 1.5),
        "fov_mm": (180.0, 216.0, 180.0),
        "profiles": {"T1w": _profile(rng), "T2w": _profile(rng)},
        "volume_ml": 10.0 * float(np.exp(rng.normal(0, 0.2))),
        "uncertainty": float(rng.uniform(0.1, 0.3)),
        "dice": float(rng.uniform(0.7, 0.9)),
        "human_volume_ml": 10.0 * float(np.exp(rng.normal(0, 0.2))),
    }
    base.update(kw)
    return CaseFacts(**base)  # type: ignore[arg-type]


def test_wasserstein_of_quantiles_matches_scipy_and_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 50_000), rng.normal(0.3, 1.4, 50_000)
    qa, qb = IntensityProfile.of(a).quantiles, IntensityProfile.of(b).quantiles
    # Percentiles 1..99 leave out the 2 % tails: within 0.02 of the full-sample distance.
    assert wasserstein_1(qa, qb) == pytest.approx(stats.wasserstein_distance(a, b), abs=0.02)
    assert wasserstein_1(qa, np.asarray(qa) + 0.25) == pytest.approx(0.25)
    with pytest.raises(DataError, match="different or empty"):
        wasserstein_1(qa, qa[:10])


def test_intensity_distance_is_the_largest_channel_and_needs_every_channel() -> None:
    q = np.asarray(IntensityProfile.of(np.random.default_rng(1).normal(size=1000)).quantiles)
    training = {"T1w": [q, q], "T2w": [q, q]}
    assert intensity_distance({"T1w": q, "T2w": q + 0.5}, training) == pytest.approx(0.5)
    with pytest.raises(DataError, match="T2w"):
        intensity_distance({"T1w": q}, training)


def test_volume_score() -> None:
    assert volume_score(20.0, 10.0) == pytest.approx(math.log(2))
    assert volume_score(5.0, 10.0) == pytest.approx(math.log(2))
    assert volume_score(0.0, 10.0) == math.inf


def test_calibration_keeps_the_stated_specificity_and_counts_the_failures() -> None:
    dice = {f"s{i}": 0.8 for i in range(20)} | {"f1": 0.2, "f2": 0.3}
    scores = {f"s{i}": float(i) for i in range(20)} | {"f1": 30.0, "f2": 5.5}
    cal = calibrate("x", scores, dice, specificity=0.9, dice_fail=0.5)
    assert cal.threshold == 17.0  # the 18th of 20 good scores: 18/20 = 0.9 unflagged
    assert cal.specificity == pytest.approx(0.9) and cal.n_good == 20 and cal.n_fail == 2
    assert cal.sensitivity == pytest.approx(0.5)  # f1 above, f2 below
    none = calibrate("x", {"f1": 1.0}, {"f1": 0.1}, specificity=0.9, dice_fail=0.5)
    assert none.threshold is None and none.n_fail == 1
    # On all cases (the intensity distance): calibrated without any good case, 9 of 10 left unflagged.
    every = calibrate(
        "x",
        {f"f{i}": float(i) for i in range(10)},
        {f"f{i}": 0.1 for i in range(10)},
        specificity=0.9,
        dice_fail=0.5,
        on_all_cases=True,
    )
    assert every.threshold == 8.0 and every.specificity is None and every.sensitivity == pytest.approx(0.1)


def test_shifted_and_off_grid_subjects_are_flagged_and_unshifted_ones_are_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    train = [_case(f"t{i}", rng) for i in range(10)]
    reference = shift_reference(train, SETTINGS)
    assert reference["calibration"]["intensity"]["threshold"] is not None
    assert reference["calibration"]["intensity"]["specificity"] >= 0.95
    path = write_reference(reference, tmp_path / "ref.json")
    assert read_reference(path) == reference
    new = [
        _case("same", rng, set="external", site="B"),
        _case("noisy", rng, set="external", site="B", profiles={"T1w": _profile(rng, gamma=0.5), "T2w": _profile(rng)}),
        _case("coarse", rng, set="external", site="B", spacing_mm=(1.5, 1.5, 5.0)),
        _case("empty", rng, set="test", volume_ml=0.0, dice=0.0),
    ]
    table = flag_table([*train, *new], reference).set_index("subject")
    assert not table.loc[[c.subject for c in train], "grid_flag"].any()
    assert not table.loc["same", "any_flag"]
    assert table.loc["noisy", "intensity_flag"] and "intensity distribution distance" in table.loc["noisy", "reasons"]
    assert table.loc["coarse", "grid_flag"] and "voxel size 5 mm on axis 2" in table.loc["coarse", "reasons"]
    assert table.loc["empty", "volume_flag"] and "empty mask" in table.loc["empty", "reasons"]
    # Training subjects keep their calibration scores (intensity: against the other training subjects).
    cv = reference["cv_scores"]["intensity"]
    assert table.loc["t3", "intensity_score"] == pytest.approx(cv["t3"])

    perf = flag_performance(table.reset_index(), ["train", "test", "external"], 0.5).set_index(["set", "flag"])
    assert perf.loc[("external", "any"), "n_flagged"] == 2 and perf.loc[("external", "any"), "n"] == 3
    assert perf.loc[("test", "volume"), "sensitivity"] == 1.0 and perf.loc[("test", "volume"), "n_fail"] == 1
    assert perf.loc[("train", "intensity"), "specificity"] >= 0.95


def test_review_records_are_read_by_the_review_list(tmp_path: Path) -> None:
    """Stage contract evaluate -> audit: a flagged subject's record is a flagged case with its reasons."""
    rng = np.random.default_rng(3)
    train = [_case(f"t{i}", rng) for i in range(6)]
    reference = shift_reference(train, SETTINGS)
    odd = _case("odd", rng, set="external", profiles={"T1w": _profile(rng, sd=1.0, gamma=0.4), "T2w": _profile(rng)})
    table = flag_table([*train, odd], reference)
    paths = {s: tmp_path / f"sub-{s}_shift.json" for s in table["subject"]}
    write_review_records(table, paths)
    case = read_flag(paths["odd"])
    assert case is not None and case.subject == "odd" and case.stage == "shift"
    assert "intensity distribution distance" in case.reason and case.threshold is not None
    assert read_flag(paths["t0"]) is None
    with pytest.raises(DataError, match="no row"):
        write_review_records(table, {"ghost": tmp_path / "x.json"})


def test_reference_refusals(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(DataError, match="at least two"):
        shift_reference([_case("a", rng)], SETTINGS)
    with pytest.raises(DataError, match="b"):
        shift_reference([_case("a", rng), _case("b", rng, dice=None)], SETTINGS)
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(DataError, match="not a shift reference"):
        read_reference(tmp_path / "x.json")


def test_profile_levels() -> None:
    profile = IntensityProfile.of(np.arange(101.0))
    assert len(profile.quantiles) == len(PROFILE_LEVELS) == 99
    assert profile.quantiles[0] == pytest.approx(1.0) and profile.quantiles[-1] == pytest.approx(99.0)
    with pytest.raises(DataError, match="finite"):
        IntensityProfile.of([1.0, float("nan")])
