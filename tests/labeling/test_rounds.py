"""medpipe.labeling.rounds: one row per round, built from the files each round's rules wrote."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from medpipe.core.errors import DataError
from medpipe.core.io import write_tsv
from medpipe.labeling.rounds import ROUND_COLUMNS, rounds_table


def _round_files(root, r, *, init, subjects, seconds, heldout_dice, batch=None, batch_dice=None, minutes=None):
    d = root / f"round-{r}"
    (d / "metrics").mkdir(parents=True)
    (d / "model.pt").write_bytes(b"")
    train = {"epochs": 3, "init_checkpoint": init}
    sidecar = {"subjects": subjects[1:], "validation_subjects": subjects[:1], "parameters": {"train": train}}
    (d / "model.pt.json").write_text(json.dumps(sidecar))
    write_tsv(pd.DataFrame({"s": [seconds]}), root / f"bench-round-{r}.tsv")
    write_tsv(pd.DataFrame({"epoch": [1, 2, 3], "val_dice": [math.nan, 0.4, math.nan]}), d / "learning_curve.tsv")
    write_tsv(
        pd.DataFrame({"subject": ["h1"], "dice": [heldout_dice], "hd95_mm": [9.0]}), d / "metrics" / "sub-h1_m.tsv"
    )
    files = {"model": d / "model.pt", "bench": root / f"bench-round-{r}.tsv", "curve": d / "learning_curve.tsv"}
    files["heldout"] = d / "metrics" / "sub-h1_m.tsv"
    if batch:
        rows = {
            "subject": [batch],
            "score": [0.9],
            "agreement": [1.0],
            "rank": [1],
            "selected": [True],
            "reason": ["x"],
        }
        write_tsv(pd.DataFrame(rows), d / "selection.tsv")
        files["selection"] = d / "selection.tsv"
    if batch_dice is not None:
        write_tsv(pd.DataFrame({"subject": [batch], "dice": [batch_dice], "hd95_mm": [4.0]}), d / "metrics" / "b.tsv")
        accepted = {"subject": [batch], "changed_share": [0.25], "correction_minutes": [minutes]}
        write_tsv(pd.DataFrame(accepted), d / "accepted.tsv")
        files["batch"], files["accepted"] = d / "metrics" / "b.tsv", d / "accepted.tsv"
    return files


def test_one_row_per_round_with_training_heldout_and_correction_numbers(tmp_path):
    r0 = _round_files(tmp_path, 0, init=None, subjects=["a", "b"], seconds=20.0, heldout_dice=0.5, batch="c",
                      batch_dice=0.6, minutes=4.0)  # fmt: skip
    r1 = _round_files(tmp_path, 1, init=str(tmp_path / "round-0" / "model.pt"), subjects=["a", "b", "c"],
                      seconds=8.0, heldout_dice=0.7, batch="d")  # fmt: skip
    rounds = [r0, r1]
    table = rounds_table(
        models=[r["model"] for r in rounds],
        benchmarks=[r["bench"] for r in rounds],
        curves=[r["curve"] for r in rounds],
        selections=[r["selection"] for r in rounds],
        accepted=[r0["accepted"]],
        batch_metrics=[r0["batch"]],
        heldout_metrics=[r["heldout"] for r in rounds],
        status={0: "corrected", 1: "waiting for corrections: 1 of 1 missing"},
        out_tsv=tmp_path / "rounds.tsv",
        out_png=tmp_path / "rounds.png",
    )
    assert list(table.columns) == ROUND_COLUMNS and list(table["round"]) == [0, 1]
    assert list(table["trained_on"]) == [2, 3] and list(table["trained_from"]) == ["scratch", "round-0"]
    assert list(table["train_seconds"]) == [20.0, 8.0] and list(table["val_dice"]) == [0.4, 0.4]
    assert list(table["heldout_dice"]) == [0.5, 0.7] and list(table["batch"]) == ["c", "d"]
    assert table.loc[0, "batch_dice"] == 0.6 and table.loc[0, "changed_share"] == 0.25
    assert table.loc[0, "correction_minutes"] == 4.0 and math.isnan(table.loc[1, "batch_dice"])
    assert table.loc[1, "status"].startswith("waiting") and (tmp_path / "rounds.png").stat().st_size > 1000


def test_a_file_outside_a_round_folder_is_refused(tmp_path):
    r0 = _round_files(tmp_path, 0, init=None, subjects=["a"], seconds=1.0, heldout_dice=0.5)
    with pytest.raises(DataError, match="no round-<r> in its path"):
        rounds_table(models=[r0["model"]], benchmarks=[tmp_path / "bench.tsv"], curves=[r0["curve"]], selections=[],
                     accepted=[], batch_metrics=[], heldout_metrics=[], status={}, out_tsv=tmp_path / "t.tsv",
                     out_png=tmp_path / "t.png")  # fmt: skip
