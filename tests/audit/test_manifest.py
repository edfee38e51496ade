"""Run manifest: every file hashed, every package versioned, seeds and switches recorded, no PHI."""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from medpipe.audit.environment import git_state
from medpipe.audit.manifest import (
    benchmark_timing,
    canonical_hash,
    find_seeds,
    read_manifest,
    write_manifest,
)
from medpipe.core.io import save_nifti

PHI = "DOE^JANE_MEDPIPEPHI_19700101"
CONFIG = {
    "subjects": "resources/subjects.tsv",
    "seed": 42,
    "deterministic": True,
    "demo": {"seed": 7, "n_subjects": 2},
    "segmentation": {"train": {"augment_seed": 3, "epochs": 1}},
}


def make_tree(root: Path) -> dict[str, Path]:
    """A small workdir: results with image/table/json/binary files, a sheet whose DICOM folder holds PHI."""
    res = root / "results"
    rng = np.random.default_rng(0)
    save_nifti(
        rng.normal(size=(6, 5, 4)).astype(np.float32),
        np.diag([2.0, 2.0, 3.0, 1.0]),
        res / "n4/sub-01/sub-01_T1w.nii.gz",
    )
    (res / "evaluate").mkdir(parents=True)
    (res / "evaluate/metrics.tsv").write_text("subject\tdice\n01\t0.8\n")
    (res / "predict/sub-01").mkdir(parents=True)
    (res / "predict/sub-01/sub-01_uncertainty.json").write_text('{"flag": false, "score": 0.1}\n')
    (res / "n4/sub-01/sub-01_T1w_qc.png").write_bytes(bytes(range(256)))
    dicom = root / "resources" / PHI  # a hospital export folder named after the patient
    dicom.mkdir(parents=True)
    (dicom / "IM0001.dcm").write_bytes(b"DICM" + PHI.encode() + bytes(64))
    sheet = root / "resources/subjects.tsv"
    sheet.write_text(f"subject\tdicom\tlabel\n01\tresources/{PHI}\t\n")
    bench = root / "benchmarks/n4"
    bench.mkdir(parents=True)
    (bench / "sub-01_T1w.tsv").write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\t"
        "mean_load\tcpu_time\n12.5\t0:00:12\t300.1\t1\t1\t1\t0\t0\t50\t6.2\n"
    )
    return {"results": res, "sheet": sheet, "benchmarks": root / "benchmarks"}


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.chdir(tmp_path)
    paths = make_tree(tmp_path)
    write_manifest(
        paths["results"],
        paths["results"] / "audit/manifest.json",
        config=CONFIG,
        subjects_sheet=paths["sheet"],
        benchmarks_dir=paths["benchmarks"],
        summary=paths["results"] / "audit/manifest_summary.html",
        methods=paths["results"] / "audit/software_versions.rst",
    )
    return paths


def test_manifest_hashes_every_file(run_dir: dict[str, Path]) -> None:
    res = run_dir["results"]
    manifest = read_manifest(res / "audit/manifest.json")
    on_disk = {p.relative_to(res).as_posix() for p in res.rglob("*") if p.is_file()}
    # everything but the manifest and its summary (written after hashing) is recorded
    assert set(manifest["files"]) == on_disk - {"audit/manifest.json", "audit/manifest_summary.html"}
    assert "audit/software_versions.rst" in manifest["files"]
    for rel, entry in manifest["files"].items():
        data = (res / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)


def test_manifest_records_every_package(run_dir: dict[str, Path]) -> None:
    manifest = read_manifest(run_dir["results"] / "audit/manifest.json")
    installed = {d.metadata["Name"]: d.version for d in metadata.distributions()}
    assert set(manifest["software"]["packages"]) == set(installed)
    for name in ("numpy", "nibabel", "pandas", "snakemake"):
        assert manifest["software"]["packages"][name] == metadata.version(name)
    assert manifest["software"]["medpipe"] == metadata.version("medpipe")
    commit = manifest["software"]["git"]["commit"]
    assert commit == "unknown" or len(commit) == 40


def test_manifest_run_section(run_dir: dict[str, Path]) -> None:
    manifest = read_manifest(run_dir["results"] / "audit/manifest.json")
    run = manifest["run"]
    assert run["seeds"] == {"seed": 42, "demo.seed": 7, "segmentation.train.augment_seed": 3}
    assert run["subject_sheet_sha256"] == hashlib.sha256(run_dir["sheet"].read_bytes()).hexdigest()
    assert run["config_sha256"] == canonical_hash(CONFIG)
    assert run["config_sha256"] != canonical_hash({**CONFIG, "seed": 43})
    assert run["subjects"] == ["01"]
    assert run["deterministic"]["config"] is True
    assert run["deterministic"]["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == os.environ.get(
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
    )
    # the input folder is recorded by content digest under the subject ID, never by path
    assert manifest["inputs"]["01"]["dicom"]["files"] == 1
    assert manifest["inputs"]["01"]["dicom"]["sha256"]
    hw = manifest["hardware"]
    assert hw["cpu"] and hw["os"] and hw["python"]
    import torch

    assert (hw["gpu"] is None) == (not torch.cuda.is_available())


def test_timing_from_benchmarks(run_dir: dict[str, Path]) -> None:
    timing = read_manifest(run_dir["results"] / "audit/manifest.json")["timing"]
    rec = timing["n4/sub-01_T1w.tsv"]
    assert rec["wall_s"] == 12.5 and rec["max_rss_mb"] == 300.1 and rec["cpu_time_s"] == 6.2
    from datetime import datetime

    span = datetime.fromisoformat(rec["end"]) - datetime.fromisoformat(rec["start"])
    assert abs(span.total_seconds() - 12.5) <= 1
    assert benchmark_timing(run_dir["benchmarks"] / "absent") == {}


def test_manifest_is_reproducible_apart_from_timing(run_dir: dict[str, Path], tmp_path: Path) -> None:
    res = run_dir["results"]
    first = read_manifest(res / "audit/manifest.json")
    bench = run_dir["benchmarks"] / "n4/sub-01_T1w.tsv"
    bench.write_text(bench.read_text().replace("12.5", "99.0"))
    write_manifest(
        res,
        tmp_path / "again.json",
        config=CONFIG,
        subjects_sheet=run_dir["sheet"],
        benchmarks_dir=run_dir["benchmarks"],
    )
    second = read_manifest(tmp_path / "again.json")
    assert first.pop("timing") != second.pop("timing")
    assert first == second


def test_no_phi_in_manifest_or_summary(run_dir: dict[str, Path]) -> None:
    audit = run_dir["results"] / "audit"
    for name in ("manifest.json", "manifest_summary.html", "software_versions.rst"):
        text = (audit / name).read_text()
        assert "MEDPIPEPHI" not in text and "DOE" not in text, name
    summary = (audit / "manifest_summary.html").read_text()
    assert "Files per stage" in summary and "n4" in summary


def test_git_state_without_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": "unknown"}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert git_state() == {"commit": "unknown", "dirty": "unknown"}


def test_find_seeds_nested() -> None:
    assert find_seeds({"a": {"b": {"seed": 1}}, "seed_split": 2, "x": 3}) == {"a.b.seed": 1, "seed_split": 2}


def test_missing_results_folder_is_named(tmp_path: Path) -> None:
    from medpipe.core.errors import DataError

    (tmp_path / "s.tsv").write_text("subject\n01\n")
    with pytest.raises(DataError, match="results folder does not exist"):
        write_manifest(tmp_path / "nope", tmp_path / "m.json", config={}, subjects_sheet=tmp_path / "s.tsv")
    assert not (tmp_path / "m.json").exists()
