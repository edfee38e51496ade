"""Smart labeling in the workflow, on a copy of the tiny run: three rounds in human mode. Round 0 trains on one
subject, predicts the pool, exports the most uncertain case for correction and stops, listing the missing
correction; the test drops the corrections in round by round; round 1 fine-tunes from round 0 and round 2 from
round 1 (weights initialised from it, asserted); the per-round table has every round."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from medpipe.core.sidecar import read_sidecar
from tests.workflow.conftest import TINY_CONFIG, clone_run, run, snakemake_cmd

TARGET = "results/labeling/rounds.tsv"


def _weights(path: Path) -> np.ndarray:
    state = torch.load(path, map_location="cpu", weights_only=True)["state"]["fine"]
    return np.concatenate([v.numpy().ravel() for k, v in sorted(state.items()) if v.is_floating_point()])


def _setup(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    work = clone_run(tiny_run, tmp_path / "wd", verify=False)
    lines = (work / "resources" / "demo" / "subjects.tsv").read_text().splitlines()
    sheet = [lines[0] + "\tset"] + [f"{line}\t{'test' if line.startswith('demo04') else 'train'}" for line in lines[1:]]
    (work / "resources" / "demo" / "subjects_labeling.tsv").write_text("\n".join(sheet) + "\n")
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["subjects"] = "resources/demo/subjects_labeling.tsv"
    cfg["labeling"] = {"rounds": 3, "initial": ["demo01"], "batch_size": 1, "fine_tune": {"learning_rate": 3e-4}}
    config = tmp_path / "labeling.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work, config


def _correct(work: Path, r: int, minutes: str = "") -> str:
    """Play the corrector of round r: the subject's human label saved where the worklist says."""
    worklist = pd.read_csv(work / f"results/labeling/round-{r}/worklist.tsv", sep="\t", dtype=str)
    ((s, target),) = zip(worklist["subject"], worklist["save_correction_as"], strict=True)
    (work / target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz", work / target)
    if minutes:
        worklist["correction_minutes"] = minutes
        worklist.to_csv(work / target.rsplit("/", 1)[0] / "worklist.tsv", sep="\t", index=False)
    return s


def test_three_rounds_with_corrections_dropped_in(tiny_run: Path, tmp_path: Path) -> None:
    work, config = _setup(tiny_run, tmp_path)
    smk = lambda *a, **kw: run(snakemake_cmd(work, "--cores", "2", *a, configfile=config), **kw)  # noqa: E731
    first = smk(TARGET)
    assert "labeling: round 0 waits for corrections" in first.stderr and "corrections/round-0/sub-" in first.stderr
    lab = work / "results" / "labeling"
    assert not (lab / "round-1").exists()  # stopped cleanly at round 0's export
    worklist = pd.read_csv(lab / "round-0" / "worklist.tsv", sep="\t", dtype=str)
    selection = pd.read_csv(lab / "round-0" / "selection.tsv", sep="\t", dtype={"subject": str})
    assert list(selection["subject"]) == ["demo02", "demo03"] or list(selection["subject"]) == ["demo03", "demo02"]
    assert selection["score"].is_monotonic_decreasing  # most uncertain first
    assert worklist.loc[0, "subject"] == selection.loc[0, "subject"]
    for column in ("image", "mask_to_edit", "dicom_seg"):
        assert (work / worklist.loc[0, column]).is_file(), column

    first_batch = _correct(work, 0, minutes="7.5")
    smk(TARGET)
    accepted0 = lab / "round-0" / "accepted" / f"sub-{first_batch}_mask.nii.gz"
    before = hashlib.sha256(accepted0.read_bytes()).hexdigest()
    stray = work / "corrections" / "round-1" / "sub-demo04_mask.nii.gz"  # the held-out subject: not in the batch
    stray.parent.mkdir(parents=True)
    shutil.copyfile(accepted0, stray)
    _correct(work, 1)
    failed = smk(TARGET, check=False)
    assert failed.returncode != 0
    assert (
        "outside the batch" in failed.stdout + failed.stderr
        and "sub-demo04_mask.nii.gz" in failed.stdout + failed.stderr
    )
    assert hashlib.sha256(accepted0.read_bytes()).hexdigest() == before  # the accepted labels are untouched
    stray.unlink()
    smk(TARGET)

    table = pd.read_csv(lab / "rounds.tsv", sep="\t", dtype={"batch": str, "status": str}, keep_default_na=False)
    assert list(table["round"]) == [0, 1, 2]
    assert list(table["trained_on"]) == [1, 2, 3]
    assert list(table["trained_from"]) == ["scratch", "round-0", "round-1"]
    assert list(table["status"][:2]) == ["corrected", "corrected"] and table.loc[2, "status"].startswith(
        "pool exhausted"
    )
    assert table.loc[0, "correction_minutes"] == "7.5" and (table["heldout_n"] == 1).all()
    assert float(table.loc[0, "changed_share"]) == read_sidecar(accepted0)["changed_share"]

    sidecar = read_sidecar(lab / "round-2" / "model.pt")
    init = [i for i in sidecar["inputs"] if i["path"].endswith("round-1/model.pt")]
    assert init and init[0]["sha256"] == hashlib.sha256((lab / "round-1" / "model.pt").read_bytes()).hexdigest()
    assert sidecar["parameters"]["train"]["init_checkpoint"].endswith("round-1/model.pt")
    log = (work / "logs" / "labeling_train" / "round-2.log").read_text()
    assert re.search(r"init fine from model.pt: (\d+) of \1 tensors copied", log), log[-2000:]
    w0, w1, w2 = (_weights(lab / f"round-{r}" / "model.pt") for r in range(3))
    torch.manual_seed(12345)
    from medpipe.segment.model import build_nets
    from medpipe.segment.settings import resolve_settings

    fresh = build_nets(resolve_settings(sidecar["parameters"]), 2)["fine"].state_dict()
    w_fresh = np.concatenate([v.numpy().ravel() for k, v in sorted(fresh.items()) if v.is_floating_point()])
    assert np.corrcoef(w2, w1)[0, 1] > 0.99 and not np.array_equal(w2, w1)  # started from round 1, then trained
    assert abs(np.corrcoef(w2, w_fresh)[0, 1]) < 0.5 and np.corrcoef(w1, w0)[0, 1] > 0.99

    # Simulation mode on the same campaign: the sheet's labels become the corrections (no corrections folder).
    cfg = yaml.safe_load(config.read_text())
    cfg["labeling"]["mode"] = "simulate"
    simulate = tmp_path / "simulate.yaml"
    simulate.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = run(snakemake_cmd(work, "--cores", "1", "-n", TARGET, configfile=simulate))
    planned = dry.stdout + dry.stderr
    assert "rule labeling_accept:" in planned and "waits for corrections" not in planned
    assert f"input: results/convert/sub-{first_batch}/sub-{first_batch}_desc-human_mask.nii.gz" in planned
