"""Model bundles: written from a tiny fake run (real MONAI fold models), verified, loaded, compared."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from medpipe.cli import main
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import save_nifti
from medpipe.core.sidecar import sha256_file, write_sidecar
from medpipe.segment.bundle import (
    MANIFEST_FILE,
    export_run,
    load_bundle,
    verify_bundle,
    write_bundle,
)
from medpipe.segment.bundle_record import BundleRecord, CvMetric
from medpipe.segment.card import model_card
from medpipe.segment.compatible import bundle_for_run, check_compatible
from medpipe.segment.model import SEG_PACKAGES, build_nets, load_model, save_model
from medpipe.segment.settings import resolve_settings
from medpipe.segment.split import folds_table, write_folds

from .conftest import AFFINE, SHAPE, TINY

CHANNELS = ["T1w", "T2w"]
SUBJECTS = ["A1", "A2", "A3", "A4"]
SEED = 7
NORMALISE = {"method": "zscore", "percentiles": [0.5, 99.5], "window_hu": [-1000, 400], "interpolation": "bspline"}
SPACING = [3.0, 3.0, 3.0]
#: The CV summary of the fake run: label, metric, n, mean, ci95_low, ci95_high (NaN: too few subjects).
SUMMARY = [
    ("lesion", "dice", 4, 0.812345, 0.701234, 0.902345),
    ("lesion", "hd95_mm", 4, 6.54321, 3.2109, 9.87654),
    ("lesion", "volume_ml", 1, 3.25, float("nan"), float("nan")),
]


def _write_subject(results: Path, subject: str, seed: int) -> None:
    """Two normalised channels (with normalise sidecars) and the label of a bright-ball case."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(float)
    centre = np.array(SHAPE) / 2 + rng.uniform(-2, 2, 3)
    label = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3))) < rng.uniform(3.5, 5.0)
    folder = results / "normalise" / f"sub-{subject}"
    for c, channel in enumerate(CHANNELS):
        data = rng.normal(0.0, 0.3, SHAPE) + (1.5 + c) * label
        image = save_nifti(data.astype(np.float32), AFFINE, folder / f"sub-{subject}_{channel}.nii.gz")
        params = {**NORMALISE, "target_spacing_mm": SPACING}
        write_sidecar(image, stage="normalise", subject=subject, parameters=params)
    save_nifti(label.astype(np.uint8), AFFINE, folder / f"sub-{subject}_desc-human_mask.nii.gz")


def _write_fold(results: Path, fold: dict[str, Any], cfg: dict[str, Any]) -> None:
    """A real (untrained) fold model saved as train_fold saves it, with its sidecar and learning curve."""
    torch.manual_seed(fold["fold"])
    nets = build_nets(cfg, len(CHANNELS))
    meta = {
        "settings": cfg,
        "in_channels": len(CHANNELS),
        "fold": fold["fold"],
        "seed": SEED,
        "subjects": fold["train"],
        "validation_subjects": fold["val"],
        "spacing_mm": SPACING,
        "sequences": [f"{c}.nii.gz" for c in CHANNELS],
    }
    folder = results / "train" / f"fold-{fold['fold']}"
    model = save_model(folder / "model.pt", nets, meta)
    images = [results / "normalise" / f"sub-{s}" / f"sub-{s}_{c}.nii.gz" for s in fold["train"] for c in CHANNELS]
    extra = {"fold": fold["fold"], "seed": SEED, "subjects": fold["train"], "n_parameters": 1}
    write_sidecar(model, stage="train", inputs=images, parameters=cfg, packages=SEG_PACKAGES, extra=extra)
    (folder / "learning_curve.tsv").write_text(f"epoch\ttrain_loss\n1\t0.{fold['fold'] + 5}\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder of a finished 2-fold run on 4 subjects (made once; tests must not change it)."""
    results = tmp_path_factory.mktemp("run") / "results"
    for i, subject in enumerate(SUBJECTS):
        _write_subject(results, subject, i)
    write_folds(SUBJECTS, 2, SEED, results / "split" / "folds.json")
    cfg = resolve_settings(TINY)
    for fold in folds_table(SUBJECTS, 2, SEED)["folds"]:
        _write_fold(results, fold, cfg)
    rows = ["label\tmetric\tn\tn_missing\tmean\tsd\tmedian\tmin\tmax\tci95_low\tci95_high"]
    rows += [f"{lab}\t{m}\t{n}\t0\t{mean}\t0.1\t{mean}\t0\t1\t{lo}\t{hi}" for lab, m, n, mean, lo, hi in SUMMARY]
    (results / "evaluate").mkdir()
    (results / "evaluate" / "summary.tsv").write_text("\n".join(rows).replace("nan", "NaN") + "\n")
    return results


def _bundle(run: Path, out: Path, **kw: Any) -> Path:
    """write_bundle with the fake run's inputs (``kw`` overrides them)."""
    args: dict[str, Any] = {
        "models": [run / "train" / f"fold-{k}" / "model.pt" for k in (1, 0)],  # any order
        "split": run / "split" / "folds.json",
        "images": [[run / "normalise" / f"sub-{s}" / f"sub-{s}_{c}.nii.gz" for c in CHANNELS] for s in SUBJECTS],
        "labels": [run / "normalise" / f"sub-{s}" / f"sub-{s}_desc-human_mask.nii.gz" for s in SUBJECTS],
        "subjects": SUBJECTS,
        "channels": CHANNELS,
        "label_name": "lesion",
        "curves": [run / "train" / f"fold-{k}" / "learning_curve.tsv" for k in (1, 0)],
        "cv_summary": run / "evaluate" / "summary.tsv",
    }
    return write_bundle(out, **{**args, **kw})


def _run_config(**preprocess: Any) -> dict[str, Any]:
    """A workflow config matching the fake run (``preprocess`` keys replace its own)."""
    return {
        "sequences": {c: {} for c in CHANNELS},
        "preprocess": {"normalise": {"method": "zscore"}, "target_spacing_mm": SPACING, **preprocess},
        "segmentation": copy.deepcopy(TINY),
    }


def test_bundle_round_trip_records_the_run(run: Path, tmp_path: Path) -> None:
    out = _bundle(run, tmp_path / "bundle")
    bundle = load_bundle(out)
    rec = bundle.record
    assert rec.channels == tuple(CHANNELS)
    assert rec.normalisation == {c: NORMALISE for c in CHANNELS}
    assert rec.target_spacing_mm == tuple(SPACING)
    assert rec.patch_size == tuple(TINY["train"]["patch_size"])
    assert (rec.num_classes, rec.label_name, rec.seed) == (2, "lesion", SEED)
    assert rec.settings == resolve_settings(TINY)
    assert rec.subjects == tuple(SUBJECTS)
    split = folds_table(SUBJECTS, 2, SEED)["folds"]
    assert [(f.fold, list(f.train_subjects), list(f.test_subjects)) for f in rec.folds] == [
        (s["fold"], s["train"], s["test"]) for s in split
    ]
    assert rec.cv_metrics[0] == CvMetric("lesion", "dice", 4, 0.812345, 0.701234, 0.902345)
    assert rec.cv_metrics[2] == CvMetric("lesion", "volume_ml", 1, 3.25, None, None)
    assert rec.training_software["torch"] == torch.__version__
    assert rec.fingerprint.n_cases == 4 and rec.fingerprint.shape_min == SHAPE == rec.fingerprint.shape_max
    assert rec.fingerprint.spacing_mm_min == tuple(SPACING)
    assert BundleRecord.from_json(json.loads(json.dumps(rec.to_json())), path="x") == rec
    broken = {k: v for k, v in rec.to_json().items() if k != "patch_size"}
    with pytest.raises(DataError, match=r"file b.json\] bundle record lacks the key 'patch_size'"):
        BundleRecord.from_json(broken, path="b.json")
    with pytest.raises(DataError, match=r"format 'medpipe-bundle-0', expected 'medpipe-bundle-1'"):
        BundleRecord.from_json({**rec.to_json(), "format": "medpipe-bundle-0"}, path="b.json")
    assert json.loads((out / "bundle.json").read_text()) == json.loads(json.dumps(rec.to_json()))
    for fold, path in zip(rec.folds, bundle.models, strict=True):
        source = run / "train" / f"fold-{fold.fold}" / "model.pt"
        assert path.read_bytes() == source.read_bytes()
        copied, original = load_model(path), load_model(source)
        assert copied.meta["fold"] == fold.fold
        for key, tensor in original.nets["fine"].state_dict().items():
            assert torch.equal(copied.nets["fine"].state_dict()[key], tensor)


def test_bundle_is_byte_identical_when_rewritten(run: Path, tmp_path: Path) -> None:
    a, b = _bundle(run, tmp_path / "a"), _bundle(run, tmp_path / "b")
    assert (a / MANIFEST_FILE).read_bytes() == (b / MANIFEST_FILE).read_bytes()
    assert verify_bundle(a) == verify_bundle(b) == sha256_file(a / MANIFEST_FILE)


def test_manifest_covers_every_file(run: Path, tmp_path: Path) -> None:
    out = _bundle(run, tmp_path / "bundle")
    listed = json.loads((out / MANIFEST_FILE).read_text())["files"]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    assert set(listed) == files
    assert {"bundle.json", "MODEL_CARD.md", "split/folds.json", "evaluate/summary.tsv"} <= files
    for k in (0, 1):
        assert {
            f"train/fold-{k}/model.pt",
            f"train/fold-{k}/model.pt.json",
            f"train/fold-{k}/learning_curve.tsv",
        } <= files
    for rel, entry in listed.items():
        assert entry == {"sha256": sha256_file(out / rel), "size": (out / rel).stat().st_size}


@pytest.mark.parametrize("rel", ["train/fold-1/model.pt", "bundle.json", "MODEL_CARD.md", "split/folds.json"])
def test_a_changed_byte_is_refused_naming_the_file(run: Path, tmp_path: Path, rel: str) -> None:
    out = _bundle(run, tmp_path / "bundle")
    data = bytearray((out / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / rel).write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{rel}: sha256 differs") as err:
        verify_bundle(out)
    assert err.value.path == str(out / rel)
    with pytest.raises(DataError, match=rel):
        load_bundle(out)


def test_missing_or_extra_files_are_refused_naming_them(run: Path, tmp_path: Path) -> None:
    out = _bundle(run, tmp_path / "bundle")
    (out / ".snakemake_timestamp").write_text("")  # Snakemake's flag in a directory() output: not content
    verify_bundle(out)
    (out / "train" / "fold-0" / "notes.txt").write_text("added later\n")
    with pytest.raises(DataError, match=r"train/fold-0/notes.txt: not listed in manifest.json"):
        verify_bundle(out)
    (out / "train" / "fold-0" / "notes.txt").unlink()
    (out / "train" / "fold-0" / "model.pt.json").unlink()
    with pytest.raises(DataError, match=r"train/fold-0/model.pt.json: listed in manifest.json but missing"):
        verify_bundle(out)
    (out / MANIFEST_FILE).unlink()
    with pytest.raises(DataError, match=MANIFEST_FILE):
        verify_bundle(out)


def test_check_compatible_names_the_differing_key_and_both_values(run: Path, tmp_path: Path) -> None:
    bundle = load_bundle(_bundle(run, tmp_path / "bundle"))
    check_compatible(bundle, _run_config())
    # percentiles only matter to the percentile method: a zscore bundle ignores them
    check_compatible(bundle.record, _run_config(normalise={"method": "zscore", "percentiles": [1, 99]}))
    swapped = {**_run_config(), "sequences": {"T2w": {}, "T1w": {}}}
    with pytest.raises(ConfigError, match=r"sequences: bundle \['T1w', 'T2w'\], run \['T2w', 'T1w'\]"):
        check_compatible(bundle, swapped)
    other = _run_config(normalise={"method": "zscore", "per_sequence": {"T2w": "percentile"}})
    with pytest.raises(
        ConfigError, match=r"preprocess.normalise.method \(sequence T2w\): bundle 'zscore', run 'percentile'"
    ):
        check_compatible(bundle, other)
    with pytest.raises(ConfigError, match=r"preprocess.target_spacing_mm: bundle \[3.0, 3.0, 3.0\], run None") as err:
        check_compatible(bundle, _run_config(target_spacing_mm=None))
    assert "sequences" not in str(err.value)  # only the keys that differ
    patch = _run_config()
    patch["segmentation"]["train"]["patch_size"] = [32, 32, 32]
    with pytest.raises(ConfigError, match=r"segmentation.train.patch_size: bundle \[16, 16, 16\], run \[32, 32, 32\]"):
        check_compatible(bundle, patch)


def test_bundle_for_run_verifies_checks_and_warns(run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = _bundle(run, tmp_path / "bundle")
    config = {**_run_config(), "segmentation": {**TINY, "bundle": str(out)}, "postprocess": {}}
    with caplog.at_level("WARNING"):
        bundle = bundle_for_run(config, ["A1", "Z9"])
    assert bundle.models == load_bundle(out).models
    assert "['A1'] have the IDs of subjects the bundle" in caplog.text  # trained on: not independent
    with pytest.raises(ConfigError, match="largest_component: auto needs cross-validation predictions"):
        bundle_for_run({**config, "postprocess": {"largest_component": "auto"}}, [])
    with pytest.raises(ConfigError, match=r"sequences: bundle \['T1w', 'T2w'\], run \['T2w', 'T1w'\]"):
        bundle_for_run({**config, "sequences": {"T2w": {}, "T1w": {}}}, [])
    (out / "MODEL_CARD.md").write_text("edited\n")
    with pytest.raises(DataError, match=r"MODEL_CARD\.md: sha256 differs"):
        bundle_for_run(config, [])


def test_model_card_numbers_equal_the_inputs(run: Path, tmp_path: Path) -> None:
    out = _bundle(run, tmp_path / "bundle")
    card = (out / "MODEL_CARD.md").read_text()
    assert card == model_card(load_bundle(out).record)
    assert "- Subjects: 4 (listed in bundle.json), split into 2 folds;" in card
    assert "trained on 2 subjects of the other folds" in card
    assert "voxel size 3.0 x 3.0 x 3.0 mm, image size 20 x 24 x 18 voxels (4 cases)." in card
    assert "- Input channels, in order: T1w, T2w." in card
    assert "- Output classes: 2 (0 background, 1 lesion)." in card
    assert "- Patch size: 16 x 16 x 16 voxels; network grid: 3.0 x 3.0 x 3.0 mm voxels." in card
    for label, metric, n, mean, lo, hi in SUMMARY:
        ci = "n/a to n/a" if np.isnan(lo) else f"{lo:.3f} to {hi:.3f}"
        assert f"| {label} | {metric} | {n} | {mean:.3f} | {ci} |" in card
    for c, channel in enumerate(CHANNELS):  # foreground medians recomputed from the images themselves
        values = []
        for s in SUBJECTS:
            folder = run / "normalise" / f"sub-{s}"
            label = np.asarray(nib.load(folder / f"sub-{s}_desc-human_mask.nii.gz").dataobj) > 0
            values.append(np.asarray(nib.load(folder / f"sub-{s}_{channel}.nii.gz").dataobj)[label])
        pooled = np.concatenate(values)
        lo, med, hi = np.percentile(pooled, [0.5, 50, 99.5])
        assert f"  - {channel}: {med:.3f} [{lo:.3f}, {hi:.3f}] ({pooled.size} voxels sampled)" in card, c
    assert "Not for clinical use" in card and "Trained on cpu with medpipe" in card


def test_inconsistent_inputs_are_refused_naming_the_file(run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"trained on channels \['T1w', 'T2w'\], the bundle is for \['T2w', 'T1w'\]"):
        _bundle(run, tmp_path / "a", channels=["T2w", "T1w"])
    with pytest.raises(DataError, match=r"models of folds \[0\] given; the split has folds 0..1"):
        _bundle(run, tmp_path / "b", models=[run / "train" / "fold-0" / "model.pt"], curves=())
    copy_run = tmp_path / "run"
    shutil.copytree(run / "normalise", copy_run / "normalise")
    sidecar = copy_run / "normalise" / "sub-A3" / "sub-A3_T2w.json"
    data = json.loads(sidecar.read_text())
    data["parameters"]["method"] = "percentile"
    sidecar.write_text(json.dumps(data))
    images = [[copy_run / "normalise" / f"sub-{s}" / f"sub-{s}_{c}.nii.gz" for c in CHANNELS] for s in SUBJECTS]
    with pytest.raises(DataError, match=r"sub-A3_T2w.json.*T2w normalised with") as err:
        _bundle(run, tmp_path / "c", images=images)
    assert err.value.subject == "A3"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(DataError, match="not empty"):
        _bundle(run, tmp_path / "full")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_cli_exports_and_verifies_a_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    assert main(["model", "export", str(run), str(out), "--label-name", "lesion"]) == 0
    assert load_bundle(out).record.channels == tuple(CHANNELS)  # the channel order the models record
    assert main(["model", "verify", str(out)]) == 0
    assert sha256_file(out / MANIFEST_FILE) in capsys.readouterr().err
    (out / "evaluate" / "summary.tsv").write_text("tampered\n")
    assert main(["model", "verify", str(out)]) == 2
    assert "evaluate/summary.tsv: sha256 differs" in capsys.readouterr().err


def test_export_without_cv_results_says_so(run: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(run, results, ignore=shutil.ignore_patterns("evaluate", "learning_curve.tsv"))
    out = export_run(results, tmp_path / "bundle")
    rec = load_bundle(out).record
    assert rec.cv_metrics == () and rec.label_name is None
    card = (out / "MODEL_CARD.md").read_text()
    assert "No cross-validation results were bundled." in card and "structure name not recorded" in card
    assert not (out / "evaluate").exists() and not (out / "train" / "fold-0" / "learning_curve.tsv").exists()


def test_a_killed_exports_staging_folder_is_cleared(run: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".bundle.k1ll3d"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "half.pt").write_bytes(b"\0")
    out = _bundle(run, tmp_path / "bundle")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    verify_bundle(out)


def test_jobs_read_the_bundle_record_without_hashing_or_torch(run: Path, tmp_path: Path) -> None:
    """What a job of an inference-only run reads (the main process verified the bundle): the same record and
    model files as the verified load, from a module that imports no torch (each job re-reads the Snakefile)."""
    import subprocess
    import sys

    from medpipe.segment.bundle_record import read_bundle_unverified

    out = _bundle(run, tmp_path / "b")
    verified, light = load_bundle(out), read_bundle_unverified(out)
    assert light.record == verified.record and light.models == verified.models and light.root == verified.root
    code = "import sys, medpipe.segment.bundle_record; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
