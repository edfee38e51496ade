"""Fold assignment: deterministic, balanced, independent of sheet order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medpipe.core.errors import ConfigError
from medpipe.segment.split import assign_folds, read_folds, validation_subset, write_folds

SUBJECTS = [f"S{i:02d}" for i in range(13)]


def test_assign_folds_is_balanced_and_order_free() -> None:
    a = assign_folds(SUBJECTS, 5, 7)
    b = assign_folds(list(reversed(SUBJECTS)), 5, 7)
    assert a == b
    sizes = sorted([list(a.values()).count(k) for k in range(5)])
    assert sizes == [2, 2, 3, 3, 3]
    assert set(a) == set(SUBJECTS)
    assert assign_folds(SUBJECTS, 5, 8) != a  # the seed matters


@pytest.mark.parametrize(("subjects", "k"), [(SUBJECTS, 1), (SUBJECTS[:3], 4), (["A", "A", "B"], 2)])
def test_assign_folds_rejects_bad_requests(subjects: list[str], k: int) -> None:
    with pytest.raises(ConfigError):
        assign_folds(subjects, k, 0)


def test_write_folds_partitions_subjects(tmp_path: Path) -> None:
    out = write_folds(SUBJECTS, 3, 42, tmp_path / "folds.json", val_fraction=0.2)
    first = out.read_bytes()
    write_folds(list(reversed(SUBJECTS)), 3, 42, out, val_fraction=0.2)
    assert out.read_bytes() == first  # byte-identical re-run
    data = read_folds(out)
    tests = [s for f in data["folds"] for s in f["test"]]
    assert sorted(tests) == SUBJECTS
    for f in data["folds"]:
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == set(SUBJECTS)
        assert not set(f["train"]) & set(f["test"]) and not set(f["val"]) & set(f["test"])
        assert f["val"] == validation_subset([*f["train"], *f["val"]], 0.2, 42 + f["fold"])
        assert len(f["val"]) == 2
    assert json.loads(first)["assignment"] == assign_folds(SUBJECTS, 3, 42)


def test_committed_sts_split_matches_assign_folds() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "splits" / "ibsi_sts_5fold.json"
    data = read_folds(path)
    assert data["assignment"] == assign_folds(list(data["assignment"]), 5, data["seed"])
    assert len(data["assignment"]) == 38
