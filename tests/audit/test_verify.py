"""Audit: verify a results tree against its manifest; diff two runs with drift sizes and reasons."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medpipe.audit.manifest import read_manifest, write_manifest
from medpipe.audit.verify import cli_diff, cli_verify, compare_table, diff_runs, environment_differences, verify
from medpipe.core.io import save_nifti
from medpipe.core.sidecar import write_json

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
CONFIG = {"seed": 1, "deterministic": True}


def make_run(root: Path, *, wall_s: float = 1.0, tweak: Callable[[dict], None] | None = None) -> Path:
    """Write a synthetic run (deterministic from fixed seeds) with its manifest; return results/."""
    rng = np.random.default_rng(11)
    parts = {
        "image": rng.normal(100, 20, size=(12, 10, 8)).astype(np.float32),
        "mask": np.zeros((12, 10, 8), np.uint8),
        "weights": {
            "conv.weight": torch.from_numpy(rng.normal(size=(4, 1, 3, 3, 3)).astype(np.float32)),
            "conv.bias": torch.zeros(4),
        },
        "features": [("original_firstorder_Mean", 10.0), ("original_shape_Volume", 1000.0)],
    }
    parts["mask"][2:8, 2:7, 2:6] = 1  # 6*5*4 = 120 voxels
    if tweak is not None:
        tweak(parts)
    res = root / "results"
    save_nifti(parts["image"], AFFINE, res / "convert/sub-01/sub-01_T1w.nii.gz")
    write_json({"stage": "convert", "subject": "01"}, res / "convert/sub-01/sub-01_T1w.json")
    save_nifti(parts["mask"], AFFINE, res / "postprocess/sub-01/sub-01_desc-auto_mask.nii.gz")
    (res / "train/fold-0").mkdir(parents=True)
    torch.save(parts["weights"], res / "train/fold-0/model.pt")
    (res / "radiomics").mkdir()
    rows = "".join(f"01\tauto\t{name}\t{value!r}\n" for name, value in parts["features"])
    (res / "radiomics/features.tsv").write_text("subject\tsource\tfeature\tvalue\n" + rows)
    (root / "subjects.tsv").write_text("subject\tdicom\n01\t\n")
    (root / "benchmarks/convert").mkdir(parents=True)
    (root / "benchmarks/convert/sub-01.tsv").write_text(f"s\tmax_rss\tcpu_time\n{wall_s}\t100\t1\n")
    write_manifest(
        res,
        res / "audit/manifest.json",
        config=CONFIG,
        subjects_sheet=root / "subjects.tsv",
        benchmarks_dir=root / "benchmarks",
        summary=res / "audit/manifest_summary.html",
    )
    return res


def test_two_identical_runs_diff_to_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "a", wall_s=1.0)
    b = make_run(tmp_path / "b", wall_s=7.0)  # timing differs; it must be ignored
    (a / "report.html").write_text("made on day 1")
    (b / "report.html").write_text("made on day 2")
    result = diff_runs(a, b)
    assert result["identical"] and result["n_differing"] == 0
    assert result["n_files"] == sum(1 for p in a.rglob("*") if p.is_file()) - 2  # report, summary
    assert all(v["verdict"].startswith("bit-identical") for v in result["stages"].values())
    assert result["environment_differences"] == []
    assert cli_diff(a, b, tmp_path / "diff.json") == 0
    assert json.loads((tmp_path / "diff.json").read_text())["n_differing"] == 0
    assert "IDENTICAL" in capsys.readouterr().out


def test_verify_names_a_changed_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = make_run(tmp_path)
    (res / "report.html").write_text("the report is made after the manifest")
    assert verify(res).intact
    assert cli_verify(res, None) == 0
    target = res / "radiomics/features.tsv"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0x01  # one bit of one byte
    target.write_bytes(bytes(data))
    capsys.readouterr()
    assert cli_verify(res, None) == 1
    out = capsys.readouterr().out
    assert "changed: radiomics/features.tsv" in out
    assert "1 changed, 0 missing, 0 extra" in out


def test_verify_lists_missing_and_extra(tmp_path: Path) -> None:
    res = make_run(tmp_path)
    (res / "train/fold-0/model.pt").unlink()
    (res / "train/fold-0/stray.txt").write_text("x")
    result = verify(res, res / "audit/manifest.json")
    assert result.missing == ["train/fold-0/model.pt"]
    assert result.extra == ["train/fold-0/stray.txt"]
    assert result.changed == [] and not result.intact


def test_diff_measures_drift_and_blames_the_first_stage(tmp_path: Path) -> None:
    def perturb(parts: dict) -> None:
        parts["image"][0, 0, 0] += 0.5
        parts["mask"][2:8, 2:7, 5] = 0  # 120 -> 90 voxels: Dice = 2*90/(120+90)
        parts["weights"]["conv.weight"][0, 0, 0, 0, 0] += 1e-3
        parts["features"][0] = ("original_firstorder_Mean", 10.25)

    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", tweak=perturb)
    result = diff_runs(a, b)
    assert not result["identical"]
    files = {f["path"]: f for f in result["differing"]}
    img = files["convert/sub-01/sub-01_T1w.nii.gz"]["details"]
    assert img["max_abs_diff"] == pytest.approx(0.5, abs=1e-4) and img["voxels_differing"] == 1
    mask = files["postprocess/sub-01/sub-01_desc-auto_mask.nii.gz"]["details"]
    assert mask["dice"] == {"1": pytest.approx(180 / 210)}
    ckpt = files["train/fold-0/model.pt"]["details"]
    assert ckpt["max_abs_diff"] == pytest.approx(1e-3, rel=1e-4) and ckpt["tensors_compared"] == 2
    assert next(iter(ckpt["largest"])) == "conv.weight"
    table = files["radiomics/features.tsv"]["details"]
    assert table["column_max_abs_diff"] == {"value": pytest.approx(0.25)}
    assert list(table["rows_largest_diff"]) == ["01 auto original_firstorder_Mean"]
    assert "unexpected" in files["convert/sub-01/sub-01_T1w.nii.gz"]["reason"]
    assert "upstream stage 'convert'" in files["train/fold-0/model.pt"]["reason"]
    assert "convert/sub-01/sub-01_T1w.json" not in files  # sidecar unchanged
    assert result["stages"]["postprocess"]["min_dice"] == pytest.approx(180 / 210)
    assert result["stages"]["convert"]["verdict"].startswith("1/2 files differ")
    assert cli_diff(a, b, tmp_path / "diff.md") == 1
    assert "| postprocess | 1/1 files differ" in (tmp_path / "diff.md").read_text()


def test_gpu_stage_is_explained_as_gpu_drift(tmp_path: Path) -> None:
    gpu = {"devices": ["NVIDIA H100"], "driver": "550", "cuda": "12.4", "cudnn": 90100}

    def on_gpu(res: Path) -> None:
        path = res / "audit/manifest.json"
        record = read_manifest(path)
        record["hardware"]["gpu"] = gpu
        path.write_text(json.dumps(record))

    def drift(parts: dict) -> None:
        parts["weights"]["conv.weight"] += 2e-6

    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", tweak=drift)
    on_gpu(a)
    on_gpu(b)
    files = {f["path"]: f for f in diff_runs(a, b)["differing"]}
    assert "GPU" in files["train/fold-0/model.pt"]["reason"]
    assert files["train/fold-0/model.pt"]["details"]["max_abs_diff"] == pytest.approx(2e-6, rel=0.05)


def test_environment_differences_name_the_package(tmp_path: Path) -> None:
    ma = read_manifest(make_run(tmp_path) / "audit/manifest.json")
    mb = json.loads(json.dumps(ma))
    mb["software"]["packages"]["numpy"] = "0.0.1"
    mb["run"]["deterministic"]["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = None
    diffs = environment_differences(ma, mb)
    assert any("numpy" in d and "0.0.1" in d for d in diffs)
    assert any("deterministic" in d for d in diffs)
    assert environment_differences(ma, None) != []


def test_feature_table_text_columns_are_compared_as_text(tmp_path: Path) -> None:
    header = "subject\tsource\timage_type\tfeature\tvalue\tibsi2_filter\tibsi2_compliance\n"
    rows = [
        "01\thuman\toriginal\toriginal_firstorder_Mean\t10.0\tnone\tn/a (no filter)\n",
        "01\thuman\twavelet-HHL\twavelet-HHL_firstorder_Mean\t2.5\twavelet coif1 HHL level 1 3D\t"
        "compliant (5.A.1, 6.A.1)\n",
    ]
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text(header + "".join(rows))
    b.write_text(header + rows[0] + rows[1].replace("compliant (5.A.1, 6.A.1)", "non-compliant (6.A.1: fails)"))
    same = compare_table(a, a)
    assert same["max_abs_diff"] == 0.0 and not same["text_cells_differing"]
    diff = compare_table(a, b)
    assert diff["column_max_abs_diff"] == {} and diff["text_cells_differing"] == {"ibsi2_compliance": 1}
