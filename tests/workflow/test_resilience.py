"""Fault tests on the tiny workflow: bad subjects stay isolated, a killed run resumes cleanly.

* A subject whose DICOM files are truncated fails its own jobs only: with ``--keep-going`` every
  other subject is converted, preprocessed, predicted, post-processed and scored, the evaluation
  summary is written without the broken subject, and the run's error summary names it.
* ``kill -9`` of snakemake and all its jobs while a model is training, then the documented
  recovery (``snakemake --unlock``, re-run; ``rerun-incomplete`` is on in profiles/default)
  completes the run: no half-written or stray files, training resumed from its last epoch
  checkpoint, everything upstream of training bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.audit import diff_runs
from medpipe.io import load_nifti
from tests.workflow.conftest import BIN, TINY_CONFIG, run, snakemake_cmd

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

BROKEN = "BROKEN01"
#: Upper bound for one tiny run on 2 CPU cores (s).
RUN_TIMEOUT = 1200


def _fresh_workdir(tmp_path: Path, tiny_workdir: Path) -> Path:
    workdir = tmp_path / "wd"
    shutil.copytree(tiny_workdir / "resources", workdir / "resources")
    return workdir


def _sheet(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "resources/demo/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)


def _add_broken_subject(workdir: Path) -> str:
    """Append an unlabelled subject whose DICOM files are all truncated to 200 bytes."""
    sheet = _sheet(workdir)
    source = workdir / sheet.loc[0, "dicom"]
    broken = source.parent / BROKEN
    shutil.copytree(source, broken)
    files = [p for p in broken.rglob("*") if p.is_file()]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[:200])
    row = {"subject": BROKEN, "dicom": str(broken.relative_to(workdir)), "label": ""}
    pd.concat([sheet, pd.DataFrame([row])]).to_csv(
        workdir / "resources/demo/subjects.tsv", sep="\t", index=False
    )
    return BROKEN


def test_broken_subject_fails_only_its_own_jobs(tmp_path: Path, tiny_workdir: Path) -> None:
    workdir = _fresh_workdir(tmp_path, tiny_workdir)
    good = sorted(_sheet(workdir)["subject"])
    broken = _add_broken_subject(workdir)

    proc = run(snakemake_cmd(workdir, "--cores", "2", "--keep-going"), timeout=RUN_TIMEOUT, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a run with a broken subject must not report success"

    # Every failed job belongs to the broken subject, and the summary names it with its log.
    failed = re.findall(r"^Error in rule (\w+):\n((?:    .*\n)+)", out, flags=re.MULTILINE)
    assert failed, out[-3000:]
    for rule, block in failed:
        assert f"subject={broken}" in block or f"sub-{broken}" in block, f"{rule} failed for a good subject"
    log = workdir / f"logs/convert_sequence/sub-{broken}_T1w.log"
    assert log.is_file() and broken in log.read_text() + out

    res = workdir / "results"
    for s in good:
        ref = load_nifti(res / f"convert/sub-{s}/sub-{s}_T1w.nii.gz")
        auto = load_nifti(res / f"postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz")
        assert auto.shape == ref.shape
        np.testing.assert_allclose(auto.affine, ref.affine, atol=1e-5)
        assert (res / f"evaluate/sub-{s}/sub-{s}_metrics.tsv").is_file()
        assert (res / f"radiomics/sub-{s}/sub-{s}_mask-auto_features.tsv").is_file()
    summary = pd.read_csv(res / "evaluate/metrics.tsv", sep="\t", dtype={"subject": str})
    assert sorted(set(summary["subject"])) == good
    assert not (res / f"convert/sub-{broken}").exists() or not any((res / f"convert/sub-{broken}").iterdir())
    # Cohort tables that need every subject wait for the fix (or for the subject's removal).
    assert not (res / "radiomics/features.tsv").exists()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _assert_no_broken_files(results: Path) -> None:
    """Every output reads back completely; no hidden temporary file of an interrupted write is left."""
    stray = [p for p in results.rglob(".*") if p.is_file()]
    assert not stray, f"temporary files of interrupted writes left behind: {stray[:10]}"
    for path in results.rglob("*"):
        if path.name.endswith(".nii.gz"):
            np.asarray(load_nifti(path).dataobj)  # reads and CRC-checks the whole gzip stream
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".tsv":
            pd.read_csv(path, sep="\t")


def test_kill_mid_training_then_rerun_resumes_and_completes(
    tmp_path: Path, tiny_workdir: Path, tiny_run: Path
) -> None:
    workdir = _fresh_workdir(tmp_path, tiny_workdir)
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["segmentation"]["train"]["epochs"] = 4  # checkpoints after epochs 1-3 to resume from
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    ckpt = workdir / "results/train/fold-0/checkpoint.pt"

    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = snakemake_cmd(workdir, "--cores", "2", configfile=config)
    with open(tmp_path / "killed_run.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while not ckpt.exists():
                assert proc.poll() is None, "run ended before training checkpointed: " + (
                    tmp_path / "killed_run.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no training checkpoint within the time limit"
                time.sleep(0.5)
        finally:
            _kill_group(proc)
    assert not (workdir / "results/train/fold-0/model.pt").exists(), "killed too late: training had finished"

    # Documented recovery: remove the stale lock, re-run (rerun-incomplete comes from profiles/default).
    run(snakemake_cmd(workdir, "--unlock", configfile=config))
    run(snakemake_cmd(workdir, "--cores", "2", configfile=config), timeout=RUN_TIMEOUT)

    train_log = (workdir / "logs/train/fold-0.log").read_text()
    assert re.search(r"resuming fold 0 from checkpoint\.pt at epoch [2-4]/4", train_log), train_log[-2000:]
    assert not ckpt.exists(), "the checkpoint is removed once training completed"
    curve = pd.read_csv(workdir / "results/train/fold-0/learning_curve.tsv", sep="\t")
    assert list(curve["epoch"]) == [1, 2, 3, 4]

    results = workdir / "results"
    _assert_no_broken_files(results)
    rerun = run(snakemake_cmd(workdir, "--cores", "1", "-n", configfile=config))
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # Upstream of training nothing depends on the epoch count: bit-identical to the uninterrupted run.
    diff = diff_runs(tiny_run / "results", results)
    upstream = ("convert", "coregister", "n4", "skullstrip", "normalise", "split")
    bad = [d for d in diff["differing"] if d["path"].split("/")[0] in upstream]
    assert not bad, "\n".join(f"{d['path']}: {d['status']} {d.get('reason', '')}" for d in bad)
    assert all(diff["stages"][s]["files"] > 0 for s in upstream if s in diff["stages"])
