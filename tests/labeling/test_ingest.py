"""medpipe.labeling.ingest and worklist: corrections are checked before they become labels; bad ones change nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medpipe.core.errors import DataError, GeometryError
from medpipe.core.io import read_tsv, save_nifti, write_tsv
from medpipe.core.sidecar import read_sidecar
from medpipe.labeling.ingest import accept_correction, check_round_folder, ingest_round
from medpipe.labeling.worklist import WORKLIST_COLUMNS, read_minutes, write_worklist

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])
SHAPE = (10, 10, 6)


@pytest.fixture
def case(tmp_path):
    """Reference image, the round's prediction (a 4x4x2 block) and a correction that moves it by one voxel."""
    ref = save_nifti(np.zeros(SHAPE, np.float32), AFFINE, tmp_path / "ref.nii.gz")
    pred = np.zeros(SHAPE, np.uint8)
    pred[2:6, 2:6, 2:4] = 1
    corr = np.zeros(SHAPE, np.uint8)
    corr[3:7, 2:6, 2:4] = 1
    (tmp_path / "corrections").mkdir()
    return {
        "reference": ref,
        "prediction": save_nifti(pred, AFFINE, tmp_path / "pred.nii.gz"),
        "correction": save_nifti(corr, AFFINE, tmp_path / "corrections" / "sub-a_mask.nii.gz"),
        "pred": pred,
        "corr": corr,
    }


def _accept(case, tmp_path, subject="a", correction=None, batch=("a", "b")):
    out = tmp_path / "accepted" / f"sub-{subject}_mask.nii.gz"
    path = correction or case["correction"]
    accept_correction(
        path, case["reference"], case["prediction"], out, subject=subject, round_index=0, batch=batch, n_classes=2
    )
    return out


def test_an_accepted_correction_records_what_the_corrector_changed(case, tmp_path):
    out = _accept(case, tmp_path)
    record = read_sidecar(out)
    changed = int((case["pred"] != case["corr"]).sum())
    union = int(((case["pred"] > 0) | (case["corr"] > 0)).sum())
    assert (record["changed_voxels"], record["changed_share"]) == (changed, round(changed / union, 6))
    assert (changed, union) == (16, 40)  # one 4x2 slab removed, one added
    assert record["predicted_voxels"] == 32 and record["corrected_voxels"] == 32
    assert record["inputs"][0]["path"].endswith("sub-a_mask.nii.gz")


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("grid", GeometryError, "correction vs reference image: grids differ"),
        ("class", DataError, r"label values \[2\] outside the classes 0..1"),
        ("nan", DataError, "1 non-integer voxels"),
        ("fraction", DataError, r"non-integer voxels \(e.g. 0.7"),
    ],
)
def test_bad_corrections_are_refused_and_nothing_is_accepted(case, tmp_path, bad, error, message):
    data = case["corr"].astype(np.float32)
    affine = AFFINE.copy()
    if bad == "grid":
        affine[0, 3] = 5.0
    elif bad == "class":
        data[0, 0, 0] = 2
    else:
        data[0, 0, 0] = np.nan if bad == "nan" else 0.7
    path = save_nifti(data, affine, tmp_path / "corrections" / "sub-a_mask.nii.gz")
    with pytest.raises(error, match=message) as info:
        _accept(case, tmp_path, correction=path)
    assert "subject a" in str(info.value) and "sub-a_mask.nii.gz" in str(info.value)
    assert not (tmp_path / "accepted").exists()


def test_a_correction_of_a_subject_outside_the_batch_is_refused(case, tmp_path):
    with pytest.raises(DataError, match=r"a correction for round 0, whose batch is \['b'\]"):
        _accept(case, tmp_path, batch=("b",))


def test_the_round_folder_must_hold_the_batch_and_nothing_else(case, tmp_path):
    folder = tmp_path / "corrections"
    check_round_folder(folder, ["a"], 0)
    with pytest.raises(DataError, match=r"corrections missing: \['.*sub-b_mask.nii.gz'\]"):
        check_round_folder(folder, ["a", "b"], 0)
    save_nifti(case["corr"], AFFINE, folder / "sub-z_mask.nii.gz")
    with pytest.raises(DataError, match=r"outside the batch \['a'\]: \['.*sub-z_mask.nii.gz'\]"):
        check_round_folder(folder, ["a"], 0)


def test_ingest_tabulates_the_round_with_the_minutes_of_the_returned_worklist(case, tmp_path):
    accepted = _accept(case, tmp_path)
    folder = tmp_path / "corrections"
    write_tsv(pd.DataFrame({"subject": ["a"], "correction_minutes": ["12.5"]}), folder / "worklist.tsv")
    table = read_tsv(ingest_round([accepted], tmp_path / "accepted.tsv", batch=["a"], round_index=0, folder=folder))
    assert list(table["subject"]) == ["a"] and table.loc[0, "correction_minutes"] == 12.5
    assert table.loc[0, "changed_share"] == 0.4
    with pytest.raises(DataError, match="accepted masks of \\['a'\\], but the batch is \\['a', 'b'\\]"):
        ingest_round([accepted], tmp_path / "x.tsv", batch=["a", "b"], round_index=0, folder=None)


def test_returned_minutes_must_be_numbers_of_batch_subjects(tmp_path):
    path = tmp_path / "worklist.tsv"
    write_tsv(pd.DataFrame({"subject": ["a", "b"], "correction_minutes": ["3", ""]}), path)
    assert read_minutes(path, ["a", "b"]) == {"a": 3.0} and read_minutes(None, ["a"]) == {}
    write_tsv(pd.DataFrame({"subject": ["a"], "correction_minutes": ["ten"]}), path)
    with pytest.raises(DataError, match="correction_minutes 'ten' is not a non-negative number"):
        read_minutes(path, ["a"])
    with pytest.raises(DataError, match="outside the batch"):
        read_minutes(path, ["b"])


def test_the_worklist_names_what_to_open_edit_and_save(tmp_path):
    selection = tmp_path / "selection.tsv"
    rows = {"subject": ["a", "b"], "score": [0.7, 0.2], "agreement": [1.0, 1.0], "rank": [1, 2]}
    rows |= {"selected": [True, False], "reason": ["uncertainty rank 1 of 2 (mean entropy 0.700)", "not selected"]}
    write_tsv(pd.DataFrame(rows), selection)
    out = write_worklist(
        selection,
        tmp_path / "worklist.tsv",
        images={"a": "img.nii.gz"},
        masks={"a": "mask.nii.gz"},
        dicom_segs={},
        corrections={"a": "corrections/round-0/sub-a_mask.nii.gz"},
    )
    table = read_tsv(out, dtype={"dicom_seg": str, "correction_minutes": str})
    assert list(table.columns) == WORKLIST_COLUMNS and list(table["subject"]) == ["a"]
    assert table.loc[0, "save_correction_as"] == "corrections/round-0/sub-a_mask.nii.gz"
    with pytest.raises(DataError, match="no image, mask or correction path"):
        write_worklist(selection, tmp_path / "w2.tsv", images={}, masks={}, dicom_segs={}, corrections={})
