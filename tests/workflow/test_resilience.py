"""Fault tests on the tiny workflow: bad subjects stay isolated, a killed run resumes cleanly.

Both tests start from a copy of the finished ``tiny_run`` (outputs, logs and Snakemake metadata,
mtimes kept) instead of running the whole workflow again; the copy must be up to date
(``snakemake -n``: nothing to be done), which is itself the re-run property.

* A subject whose DICOM files are truncated fails its own jobs only: with ``--keep-going`` every
  other subject is post-processed, scored and its radiomics extracted again in the same run (those
  outputs are deleted first), the evaluation summary is written without the broken subject, and the
  run's error summary names it and its log. (Both images, no mask perturbations: the perturbed
  sources are the same radiomics rule on other masks, already run by ``tiny_run``.)
* ``kill -9`` of snakemake and all its jobs while a model is training (a longer schedule than the
  tiny run's, so Snakemake retrains with upstream up to date), then the documented recovery
  (``snakemake --unlock``, re-run; ``rerun-incomplete`` is on in profiles/default) completes the
  segmentation (every subject's automatic mask and the evaluation summary; radiomics and the cohort
  tables downstream are the broken-subject test's): no half-written or stray files, training resumed
  from its last epoch checkpoint and ended with a model byte-identical to an uninterrupted training,
  every subject predicted again.
"""

from __future__ import annotations

import base64
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
import torch
import yaml

from medpipe.core.io import load_nifti
from medpipe.core.sidecar import sha256_file
from tests.workflow.conftest import BIN, TINY_CONFIG, clone_run, run, snakemake_cmd

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

BROKEN = "BROKEN01"
#: Upper bound for one (partial) tiny run on 2 CPU cores (s).
RUN_TIMEOUT = 900
#: Stages downstream of prediction; the broken-subject test deletes them so they must be recomputed.
DOWNSTREAM = ("postprocess", "evaluate", "radiomics", "stats", "audit")


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
    pd.concat([sheet, pd.DataFrame([row])]).to_csv(workdir / "resources/demo/subjects.tsv", sep="\t", index=False)
    return BROKEN


def _assert_native_mask(res: Path, subject: str) -> None:
    """The automatic mask is binary and on the subject's native (converted reference) grid."""
    ref = load_nifti(res / f"convert/sub-{subject}/sub-{subject}_T1w.nii.gz")
    auto = load_nifti(res / f"postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.nii.gz")
    assert auto.shape == ref.shape
    np.testing.assert_allclose(auto.affine, ref.affine, atol=1e-5)
    assert set(np.unique(np.asarray(auto.dataobj))) <= {0, 1}


def _without_perturbations(path: Path) -> Path:
    """The tiny configuration without mask perturbations, written to ``path``."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["radiomics"]["perturbations"] = []
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _segmentation_targets(workdir: Path) -> list[str]:
    """The evaluation summary and every subject's automatic mask."""
    subjects = sorted(_sheet(workdir)["subject"])
    return [
        "results/evaluate/summary.tsv",
        *(f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz" for s in subjects),
    ]


def test_broken_subject_fails_only_its_own_jobs(tmp_path: Path, tiny_run: Path) -> None:
    workdir = clone_run(tiny_run, tmp_path / "wd")
    sheet = _sheet(workdir)
    good = sorted(sheet["subject"])
    labelled = sorted(sheet.loc[sheet["label"] != "", "subject"])
    assert len(labelled) >= 3
    res = workdir / "results"
    for stage in DOWNSTREAM:
        shutil.rmtree(res / stage)
    broken = _add_broken_subject(workdir)

    config = _without_perturbations(tmp_path / "config.yaml")
    started = time.time()
    proc = run(
        snakemake_cmd(workdir, "--cores", "2", "--keep-going", configfile=config), timeout=RUN_TIMEOUT, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a run with a broken subject must not report success"

    # Every failed job belongs to the broken subject, and the summary names it with its log.
    failed = re.findall(r"^Error in rule (\w+):\n((?:    .*\n)+)", out, flags=re.MULTILINE)
    assert failed, out[-3000:]
    for rule, block in failed:
        assert f"subject={broken}" in block or f"sub-{broken}" in block, f"{rule} failed for a good subject"
    assert "convert_sequence" in {rule for rule, _ in failed}
    log = workdir / f"logs/convert_sequence/sub-{broken}_T1w.log"
    assert str(log.relative_to(workdir)) in out, "the error summary does not point to the failed job's log"
    assert log.is_file(), out[-3000:]
    text = log.read_text()
    assert broken in text and re.search(r"DicomError: .*file \S+\.dcm", text), text[-2000:]

    # The good subjects' downstream outputs were recomputed in this very run, from valid inputs.
    for s in good:
        _assert_native_mask(res, s)
        made = [
            res / f"postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz",
            res / f"radiomics/sub-{s}/sub-{s}_img-T1w_mask-auto_features.tsv",
        ]
        if s in labelled:
            made += [res / f"evaluate/sub-{s}/sub-{s}_metrics.tsv"]
            made += [res / f"radiomics/sub-{s}/sub-{s}_img-T2w_mask-human_features.tsv"]
        for path in made:
            assert path.stat().st_mtime >= started - 1, f"{path} was not written by this run"
        features = pd.read_csv(made[1], sep="\t")
        assert len(features) > 0
        values = features.select_dtypes("number").to_numpy()
        assert values.size > 0 and np.isfinite(values).any()
    summary = pd.read_csv(res / "evaluate/metrics.tsv", sep="\t", dtype={"subject": str})
    assert sorted(summary["subject"]) == labelled
    assert summary["dice"].between(0, 1).all()
    assert (res / "evaluate/summary.tsv").stat().st_mtime >= started - 1

    # Nothing of the broken subject beyond its failed conversion; the rest of the tree is untouched.
    assert not (res / f"convert/sub-{broken}").exists() or not any((res / f"convert/sub-{broken}").iterdir())
    for stage in ("n4", "normalise", "predict", "postprocess", "radiomics"):
        assert not (res / f"{stage}/sub-{broken}").exists()
    # Cohort tables that need every subject wait for the fix (or for the subject's removal).
    assert not (res / "radiomics/features.tsv").exists()
    assert not (res / "audit/manifest.json").exists()

    # The failed jobs were written as a sign-off sheet (decision "exclude", reason from the job log)...
    failures = pd.read_csv(workdir / "logs/failed_jobs.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert set(failures["subject"]) == {broken}, failures
    assert set(failures["rule"]) == {"convert_sequence"} and (failures["decision"] == "exclude").all()
    assert failures["comment"].str.contains("DicomError: ").all(), failures["comment"].tolist()
    assert not failures["comment"].str.contains(str(sheet.loc[0, "dicom"]).rsplit("/", 1)[0]).any()
    # ... which, fed back as review.signoff, drops the broken subject: the run completes, and the
    # report (built from it) lists the subject with the failed rule and the reason.
    cfg = yaml.safe_load(config.read_text())
    cfg["review"] = {"signoff": "logs/failed_jobs.tsv"}
    signed = tmp_path / "signed.yaml"
    signed.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run(snakemake_cmd(workdir, "--cores", "2", configfile=signed), timeout=RUN_TIMEOUT)
    features = pd.read_csv(res / "radiomics/features.tsv", sep="\t", dtype={"subject": str})
    assert broken not in set(features["subject"]) and set(features["subject"]) == set(good)
    assert (res / "audit/manifest.json").is_file()
    run(snakemake_cmd(workdir, "--cores", "1", "--report", "results/report.html", configfile=signed))
    page = (res / "audit/flagged_cases.html").read_text()
    assert "Subjects excluded by the sign-off" in page and broken in page
    assert "job convert_sequence failed: DicomError: " in page
    report = (res / "report.html").read_text()
    payloads = b"\n".join(base64.b64decode(b) for b in re.findall(r"base64,([A-Za-z0-9+/=]+)", report))
    assert b"job convert_sequence failed: DicomError: " in payloads and broken.encode() in payloads


def _kill_group(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _assert_no_broken_files(results: Path) -> None:
    """Every output reads back completely; no hidden temporary file of an interrupted write is left."""
    # Snakemake's own marker in a directory() output (results/bundle) is not a write of ours.
    stray = [p for p in results.rglob(".*") if p.is_file() and p.name != ".snakemake_timestamp"]
    assert not stray, f"temporary files of interrupted writes left behind: {stray[:10]}"
    for path in results.rglob("*"):
        if path.name.endswith(".nii.gz"):
            np.asarray(load_nifti(path).dataobj)  # reads and CRC-checks the whole gzip stream
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".tsv":
            pd.read_csv(path, sep="\t")


def _retrain_setup(tmp_path: Path, tiny_run: Path, name: str, *, verify: bool = True) -> Path:
    """A copy of the tiny run whose models must be retrained (under a config with other settings).

    Models are protected outputs: the documented way to retrain is to delete them by hand.
    """
    workdir = clone_run(tiny_run, tmp_path / name, verify=verify)
    for model in (workdir / "results/train").glob("fold-*/model.pt"):
        model.unlink()
    return workdir


def test_kill_mid_training_then_rerun_resumes_and_completes(tmp_path: Path, tiny_run: Path) -> None:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    # Checkpoints after epochs 1-3 to resume from; ~0.5 s per epoch on 2 idle cores, and the kill
    # lands within ~0.1 s of the first checkpoint. (Longer schedules make this tiny model predict
    # empty masks.)
    cfg["segmentation"]["train"].update(epochs=4, iterations_per_epoch=8)
    config = tmp_path / "config.yaml"
    # Key order kept: Snakemake compares dict params by repr, so a reordered section would rerun its rules.
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    workdir = _retrain_setup(tmp_path, tiny_run, "wd")
    train = workdir / "results/train"

    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    targets = _segmentation_targets(workdir)
    cmd = snakemake_cmd(workdir, "--cores", "2", *targets, configfile=config)
    with open(tmp_path / "killed_run.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while not (ckpts := sorted(train.glob("fold-*/checkpoint.pt"))):
                assert proc.poll() is None, (
                    "run ended before training checkpointed: " + (tmp_path / "killed_run.log").read_text()[-3000:]
                )
                assert time.monotonic() < deadline, "no training checkpoint within the time limit"
                time.sleep(0.05)
        finally:
            _kill_group(proc)
    fold_dir = ckpts[0].parent
    fold = int(fold_dir.name.removeprefix("fold-"))
    done = int(torch.load(fold_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"])
    assert 1 <= done < 4 and not (fold_dir / "model.pt").exists(), "killed too late: training had finished"

    # Documented recovery: remove the stale lock, re-run (rerun-incomplete comes from profiles/default).
    run(snakemake_cmd(workdir, "--unlock", configfile=config))
    started = time.time()
    run(snakemake_cmd(workdir, "--cores", "2", *targets, configfile=config), timeout=RUN_TIMEOUT)

    train_log = (workdir / f"logs/train/fold-{fold}.log").read_text()
    assert f"resuming fold {fold} from checkpoint.pt at epoch {done + 1}/4" in train_log, train_log[-2000:]
    assert not (fold_dir / "checkpoint.pt").exists(), "the checkpoint is removed once training completed"
    for curve_tsv in train.glob("fold-*/learning_curve.tsv"):
        curve = pd.read_csv(curve_tsv, sep="\t")
        assert list(curve["epoch"]) == [1, 2, 3, 4]
        assert np.isfinite(curve["train_loss"]).all()

    results = workdir / "results"
    _assert_no_broken_files(results)
    rerun = run(snakemake_cmd(workdir, "--cores", "1", "-n", *targets, configfile=config))
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # Every subject was predicted again by the retrained model(s) and mapped back to its native grid.
    models = {sha256_file(p) for p in train.glob("fold-*/model.pt")}
    for s in sorted(_sheet(workdir)["subject"]):
        pred = results / f"predict/sub-{s}/sub-{s}_pred.nii.gz"
        assert pred.stat().st_mtime >= started - 1, f"{pred} was not predicted again"
        used = {i["sha256"] for i in json.loads(pred.with_suffix("").with_suffix(".json").read_text())["inputs"]}
        assert used & models, f"{pred} does not record a retrained model among its inputs"
        _assert_native_mask(results, s)

    # Only training and what depends on it ran: nothing upstream was redone (mtimes are those of tiny_run).
    for stage in ("convert", "coregister", "n4", "skullstrip", "normalise", "split"):
        files = [p for p in (results / stage).rglob("*") if p.is_file()]
        assert files, stage
        redone = [p for p in files if p.stat().st_mtime != (tiny_run / p.relative_to(workdir)).stat().st_mtime]
        assert not redone, f"upstream outputs recomputed: {redone[:5]}"

    # Resuming is exact: an uninterrupted training of the same fold gives the same bytes.
    reference = _retrain_setup(tmp_path, tiny_run, "wd_ref", verify=False)
    target = f"results/train/fold-{fold}/model.pt"
    run(snakemake_cmd(reference, "--cores", "2", target, configfile=config), timeout=RUN_TIMEOUT)
    assert sha256_file(reference / target) == sha256_file(workdir / target), "resumed model differs"
    pd.testing.assert_frame_equal(
        pd.read_csv(reference / f"results/train/fold-{fold}/learning_curve.tsv", sep="\t"),
        pd.read_csv(fold_dir / "learning_curve.tsv", sep="\t"),
    )
