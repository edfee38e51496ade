"""medpipe.labeling.select: the next batch by uncertainty, seeded random draw, sheet order or explicit list."""

from __future__ import annotations

import pytest

from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import read_tsv
from medpipe.core.records import UncertaintyRecord, write_uncertainty
from medpipe.labeling.select import read_selection, select_batch

POOL = ["p3", "p1", "p4", "p2"]
SCORES = {"p1": (0.20, 0.9), "p2": (0.60, 0.9), "p3": (0.60, 0.5), "p4": (0.05, 1.0)}


@pytest.fixture
def records(tmp_path):
    paths = []
    for s, (score, agreement) in SCORES.items():
        rec = UncertaintyRecord(subject=s, score=score, threshold=0.35, flag=score > 0.35, agreement=agreement)
        paths.append(write_uncertainty(rec, tmp_path / f"sub-{s}_uncertainty.json"))
    return paths


def _select(records, tmp_path, **kw):
    settings = {"pool": POOL, "strategy": "uncertainty", "batch_size": 2, "seed": 1, "round_index": 0, **kw}
    out = tmp_path / f"selection_{settings['strategy']}_{settings['round_index']}.tsv"
    return select_batch(records, out, **settings), out


def test_uncertainty_takes_the_most_uncertain_cases_ties_by_agreement(records, tmp_path):
    chosen, out = _select(records, tmp_path)
    assert chosen == ["p3", "p2"]  # both 0.60: the lower agreement (p3) first
    assert read_selection(out) == chosen
    table = read_tsv(out, dtype={"subject": str, "reason": str})
    assert list(table["subject"]) == ["p3", "p2", "p1", "p4"] and list(table["rank"]) == [1, 2, 3, 4]
    assert table.loc[0, "reason"] == "uncertainty rank 1 of 4 (mean entropy 0.600)"
    assert table.loc[3, "reason"] == "not selected"


def test_random_is_seeded_per_round_and_sheet_order_keeps_the_sheet(records, tmp_path):
    a, _ = _select(records, tmp_path, strategy="random", round_index=1)
    b, _ = _select(records, tmp_path, strategy="random", round_index=1)
    draws = {tuple(_select(records, tmp_path, strategy="random", round_index=r)[0]) for r in range(8)}
    assert a == b and len(draws) > 1  # same seed and round: same batch; other rounds: other batches
    assert _select(records, tmp_path, strategy="sheet_order")[0] == ["p3", "p1"]


def test_explicit_batch_overrides_and_must_come_from_the_pool(records, tmp_path):
    chosen, out = _select(records, tmp_path, explicit=["p4"])
    assert chosen == ["p4"] and read_tsv(out, dtype={"reason": str}).loc[0, "reason"] == "listed in labeling.batches"
    with pytest.raises(ConfigError, match=r"\['p9'\] are not in the round's pool"):
        _select(records, tmp_path, explicit=["p9"])


def test_a_pool_without_its_records_is_refused(records, tmp_path):
    with pytest.raises(DataError, match="do not match the pool"):
        _select(records[:3], tmp_path)
