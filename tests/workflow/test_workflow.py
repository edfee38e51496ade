"""End-to-end: the tiny workflow through every stage, re-run behaviour, PHI and start-up validation."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import REPO, TINY_CONFIG, clone_run, run, snakemake_cmd

pytestmark = pytest.mark.workflow


def _subjects(workdir: Path) -> list[str]:
    sheet = pd.read_csv(workdir / "resources/demo/subjects.tsv", sep="\t", dtype=str)
    return sorted(sheet["subject"])


def test_every_stage_produced_real_outputs(tiny_run: Path) -> None:
    res = tiny_run / "results"
    subjects = _subjects(tiny_run)
    assert len(subjects) == 4
    for s in subjects:
        ref = nib.load(res / f"convert/sub-{s}/sub-{s}_T1w.nii.gz")
        auto = nib.load(res / f"postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz")
        # the automatic mask is back on the native converted grid, exactly
        assert auto.shape == ref.shape
        np.testing.assert_allclose(auto.affine, ref.affine, atol=1e-5)
        assert set(np.unique(np.asarray(auto.dataobj))) <= {0, 1}
        brain = np.asarray(nib.load(res / f"skullstrip/sub-{s}/sub-{s}_brainmask.nii.gz").dataobj)
        assert 0.05 < brain.mean() < 0.8, "brain mask covers an implausible part of the head"
        norm = np.asarray(nib.load(res / f"normalise/sub-{s}/sub-{s}_T2w.nii.gz").dataobj, dtype=float)
        inside = norm[np.asarray(nib.load(res / f"normalise/sub-{s}/sub-{s}_T1w.nii.gz").dataobj) != 0]
        assert np.isfinite(norm).all() and inside.size > 0
        sidecar = json.loads((res / f"n4/sub-{s}/sub-{s}_T1w.json").read_text())
        assert sidecar["subject"] == s and sidecar["inputs"][0]["sha256"]
    metrics = pd.read_csv(res / "evaluate/metrics.tsv", sep="\t")
    assert set(subjects) <= set(metrics["subject"].astype(str))
    assert metrics["dice"].between(0, 1).all()
    features = pd.read_csv(res / "radiomics/features.tsv", sep="\t")
    assert {"human", "auto"} <= set(features["source"])
    # radiomics.images: both sequences, inside the same masks: equal shape features, different intensities
    assert set(features["image"]) == {"T1w", "T2w"}
    values = features[features["source"] == "human"].pivot_table(
        index=["subject", "feature"], columns="image", values="value", aggfunc="first"
    )
    shape = values[values.index.get_level_values("feature").str.startswith("original_shape_")]
    assert len(shape) > 0 and np.allclose(shape["T1w"], shape["T2w"])
    mean = values.xs("original_firstorder_Mean", level="feature")
    assert not np.allclose(mean["T1w"], mean["T2w"])
    retention = pd.read_csv(res / "stats/retention_by_class.tsv", sep="\t")
    assert list(dict.fromkeys(retention["image"])) == ["T1w", "T2w", "all"]
    repro = pd.read_csv(res / "stats/reproducibility.tsv", sep="\t")
    assert len(repro) > 50 and "ccc" in repro.columns
    assert {"erode", "dilate", "noise"} <= set(features["source"])
    for s in subjects:  # perturbed masks on the human mask's grid: eroded inside, dilated around it
        human_img = nib.load(res / f"convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz")
        human = np.asarray(human_img.dataobj) > 0
        eroded_img = nib.load(res / f"radiomics/sub-{s}/sub-{s}_desc-erode_mask.nii.gz")
        eroded = np.asarray(eroded_img.dataobj) > 0
        dilated = np.asarray(nib.load(res / f"radiomics/sub-{s}/sub-{s}_desc-dilate_mask.nii.gz").dataobj) > 0
        np.testing.assert_allclose(eroded_img.affine, human_img.affine, atol=1e-6)
        assert 0 < eroded.sum() < human.sum() < dilated.sum()
        assert not (eroded & ~human).any() and not (human & ~dilated).any()
        noisy = nib.load(res / f"radiomics/sub-{s}/sub-{s}_desc-noise_T1w.nii.gz")
        n4 = nib.load(res / f"n4/sub-{s}/sub-{s}_T1w.nii.gz")
        np.testing.assert_allclose(noisy.affine, n4.affine, atol=1e-6)
        difference = np.asarray(noisy.dataobj, dtype=float) - np.asarray(n4.dataobj, dtype=float)
        assert 0 < difference.std() < np.asarray(n4.dataobj, dtype=float)[human].std()
    robust = pd.read_csv(res / "stats/robustness_by_class.tsv", sep="\t")
    assert set(robust["perturbation"]) == {"erode", "dilate", "noise", "all"}
    both = robust[robust["image"] == "all"].set_index(["perturbation", "class"])["percent_reproducible"]
    assert both[("all", "all")] <= min(both[(p, "all")] for p in ("erode", "dilate", "noise"))
    per_feature = pd.read_csv(res / "stats/robustness.tsv", sep="\t")
    assert {"icc31_all", "ccc_noise", "robust"} <= set(per_feature.columns)
    manifest = json.loads((res / "audit/manifest.json").read_text())
    assert manifest["files"]


def test_report_has_qc_images(tiny_run: Path) -> None:
    html = (tiny_run / "results/report.html").read_text(errors="replace")
    assert html.count("data:image/png") + html.count(".png") >= 8
    for stage in ("N4", "Skull", "Radiomics"):
        assert stage.lower() in html.lower()
    assert "Retention by image and class" in html  # the per-image retention table (radiomics.images) is reported


def test_rerun_has_nothing_to_do(tiny_run: Path) -> None:
    proc = run(snakemake_cmd(tiny_run, "--cores", "1", "-n"))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_no_planted_phi_in_outputs(tiny_run: Path) -> None:
    """Neither the planted patient data nor the identifiers planted in every PS3.15 basic-profile attribute of the
    source series (medpipe.demo.profile_phi) reach any output: images, masks, DICOM-SEG, sidecars, tables, figures,
    logs, benchmarks and the report, binary files included (gzip decompressed)."""
    import gzip

    planted = json.loads((tiny_run / "resources/demo/phi.json").read_text())
    strings = {v for v in _flatten(planted) if isinstance(v, str) and len(v) >= 4} | {"MEDPIPEPHI"}
    assert len(planted["profile"]) > 400 and set(planted["profile"]) <= strings
    needles = sorted({s.lower().encode() for s in strings})
    hits, n_files = [], 0
    for folder in ("results", "logs"):
        for path in (tiny_run / folder).rglob("*"):
            if not path.is_file():
                continue
            n_files += 1
            data = path.read_bytes()
            data = (gzip.decompress(data) if path.suffix == ".gz" else data).lower()
            hits += [f"{path}: {s.decode()}" for s in needles if s in data]
            hits += [f"{path} (file name): {s.decode()}" for s in needles if s.decode() in path.name.lower()]
    assert n_files > 300 and (tiny_run / "results/report.html").is_file()
    assert any(tiny_run.glob("results/postprocess/sub-*/*.dcm"))  # the DICOM-SEG exports are among them
    assert not hits, "planted PHI found:\n" + "\n".join(hits[:20])


def _flatten(obj: object) -> list[object]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _flatten(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _flatten(v)]
    return [obj]


def _fresh_workdir(tmp_path: Path, tiny_workdir: Path) -> Path:
    wd = tmp_path / "wd"
    shutil.copytree(tiny_workdir / "resources", wd / "resources")
    return wd


def test_invalid_config_key_stops_before_any_job(tmp_path: Path, tiny_workdir: Path) -> None:
    wd = _fresh_workdir(tmp_path, tiny_workdir)
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["postprocess"]["largest_componnent"] = True
    cfg["seed"] = "forty-two"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = run(snakemake_cmd(wd, "--cores", "1", configfile=bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "postprocess" in out and "largest_componnent" in out
    assert "seed" in out and "forty-two" in out
    assert not (wd / "results").exists()


def test_sheet_row_with_missing_folder_stops_before_any_job(tmp_path: Path, tiny_workdir: Path) -> None:
    wd = _fresh_workdir(tmp_path, tiny_workdir)
    sheet = wd / "resources/demo/subjects.tsv"
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    df.loc[1, "dicom"] = "resources/demo/dicom/no_such_folder"
    df.to_csv(sheet, sep="\t", index=False)
    proc = run(snakemake_cmd(wd, "--cores", "1"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "row 3" in out and df.loc[1, "subject"] in out and "no_such_folder" in out
    assert not (wd / "results").exists()


def test_lint_is_clean(tiny_workdir: Path) -> None:
    proc = run(snakemake_cmd(tiny_workdir, "--lint"), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


#: Stages recomputed by the re-run test: everything after prediction (the stages a changed analysis setting
#: re-runs). Conversion, preprocessing, split, training and prediction from scratch are compared with this run
#: file for file by tests/workflow/test_slurm.py (a second, independent run of the same workflow through SLURM).
RECOMPUTED = ("postprocess", "evaluate", "radiomics", "stats", "signature", "bundle", "audit")


def test_rerun_of_the_analysis_stages_is_bit_identical_and_verify_catches_a_byte(
    tmp_path: Path, tiny_run: Path
) -> None:
    """Deterministic mode: the stages after prediction, run again, reproduce every output bit for bit."""
    wd = clone_run(tiny_run, tmp_path / "wd", verify=False)
    for stage in RECOMPUTED:
        shutil.rmtree(wd / "results" / stage)
    run(snakemake_cmd(wd, "--cores", "2", "--profile", str(REPO / "profiles" / "default")))
    medpipe = str(Path(sys.executable).parent / "medpipe")
    diff = run(
        [
            medpipe,
            "audit",
            "diff",
            str(tiny_run / "results"),
            str(wd / "results"),
            "--out",
            str(tmp_path / "diff.json"),
        ],
        check=False,
    )
    result = json.loads((tmp_path / "diff.json").read_text())
    assert diff.returncode == 0 and result["identical"], diff.stdout[-4000:]
    assert all(result["stages"][s]["files"] > 0 for s in ("radiomics", "stats", "signature", "evaluate"))

    target = wd / "results/evaluate/metrics.tsv"
    data = bytearray(target.read_bytes())
    data[-2] = ord("7") if data[-2] != ord("7") else ord("8")
    target.write_bytes(bytes(data))
    verify = run([medpipe, "audit", "verify", str(wd / "results")], check=False)
    assert verify.returncode != 0
    assert "evaluate/metrics.tsv" in verify.stdout + verify.stderr


def test_flagged_uncertainty_records_are_in_the_review_list(tiny_run: Path) -> None:
    """Stage contract predict -> audit: every uncertainty record with flag true is listed for review."""
    from medpipe.core.records import read_uncertainty

    records = [read_uncertainty(p) for p in sorted((tiny_run / "results/predict").glob("sub-*/sub-*_uncertainty.json"))]
    assert len(records) == len(_subjects(tiny_run))
    table = pd.read_csv(tiny_run / "results/audit/flagged_cases.tsv", sep="\t", dtype=str, keep_default_na=False)
    listed = table[table["stage"] == "predict"].set_index("subject")["reason"].to_dict()
    for record in records:
        if record.flag:
            assert record.subject in listed, f"sub-{record.subject} is flagged by predict but not in the review list"
            assert listed[record.subject] == record.reason
    assert set(listed) == {r.subject for r in records if r.flag}
    # ... and the report embeds that list (base64 data URIs) under "Cases flagged for review"
    html = (tiny_run / "results/report.html").read_text(errors="replace")
    embedded = b"\n".join(
        base64.b64decode(b) for b in re.findall(r"data:[^\"' ]*?;base64,([A-Za-z0-9+/=]+)", html)
    ).decode(errors="replace")
    assert "flagged_cases.html" in html
    for subject in listed:
        assert f"sub-{subject}" in embedded or subject in embedded, f"{subject} flagged but not in the report"


def test_outcome_models_compare_human_and_automatic_masks(tiny_run: Path) -> None:
    """Signature stage: one CV model per mask source on the same subjects, DeLong comparison in the report."""
    outcomes = pd.read_csv(tiny_run / "resources/demo/truth/outcomes.tsv", sep="\t", dtype={"subject": str})
    oof = {
        s: pd.read_csv(tiny_run / f"results/signature/source-{s}/oof.tsv", sep="\t", dtype={"subject": str})
        for s in ("human", "auto")
    }
    for table in oof.values():
        assert sorted(table["subject"]) == sorted(outcomes["subject"])
        merged = table.merge(outcomes, on="subject")
        assert (merged["outcome"] == merged["response"]).all()
        assert table["probability"].between(0, 1).all()
    comparison = pd.read_csv(tiny_run / "results/signature/comparison.tsv", sep="\t")
    row = comparison.iloc[0]
    assert (row["source_a"], row["source_b"]) == ("human", "auto")
    assert 0 <= row["p"] <= 1 and " vs " in row["text"] and "P " in row["text"]
    model = json.loads((tiny_run / "results/signature/source-auto/model.json").read_text())
    assert model["n_subjects"] == len(outcomes) and model["n_events"] == int(outcomes["response"].sum())
    html = (tiny_run / "results/report.html").read_text(errors="replace")
    assert "8. Outcome models" in html and "comparison.tsv" in html


def test_the_run_bundles_its_models_verifiably(tiny_run: Path, tmp_path: Path) -> None:
    """rule all packs the fold models: the bundle verifies, holds the run's models byte for byte, fits the
    run's own config, refuses a changed byte and a changed channel list."""
    from medpipe.core.errors import ConfigError, DataError
    from medpipe.segment.bundle import load_bundle
    from medpipe.segment.compatible import check_compatible

    res = tiny_run / "results"
    bundle = load_bundle(res / "bundle")  # verifies every hash first
    folds = sorted(res.glob("train/fold-*/model.pt"))
    assert len(bundle.models) == len(folds) >= 2
    for ours, theirs in zip(sorted(bundle.models), folds, strict=True):
        assert ours.read_bytes() == theirs.read_bytes()
    config = yaml.safe_load(TINY_CONFIG.read_text())
    check_compatible(bundle, config)
    with pytest.raises(ConfigError, match="sequences"):
        check_compatible(bundle, {**config, "sequences": dict(reversed(list(config["sequences"].items())))})
    copy = shutil.copytree(res / "bundle", tmp_path / "bundle")
    card = copy / "MODEL_CARD.md"
    card.write_bytes(card.read_bytes().replace(b"Subjects", b"subjects", 1))
    with pytest.raises(DataError, match=r"MODEL_CARD\.md"):
        load_bundle(copy)


def test_shift_flags_are_calibrated_bundled_and_reviewed(tiny_run: Path) -> None:
    """The shift reference is fitted on the training set's cross-validated cases and travels in the bundle;
    every subject has a flag row and a review record, flagged ones are in the review list with the reason."""
    res = tiny_run / "results"
    reference = json.loads((res / "evaluate/shift_reference.json").read_text())
    assert (res / "bundle/evaluate/shift_reference.json").read_bytes() == (
        res / "evaluate/shift_reference.json"
    ).read_bytes()
    subjects = _subjects(tiny_run)
    assert sorted(reference["subjects"]) == subjects  # the tiny sheet has no set column: all train
    assert set(reference["calibration"]) == {"intensity", "uncertainty", "volume"}
    flags = pd.read_csv(res / "evaluate/shift_flags.tsv", sep="\t", dtype={"subject": str}, keep_default_na=False)
    assert sorted(flags["subject"]) == subjects
    for row in flags.itertuples():
        cv = reference["cv_scores"]["intensity"][row.subject]
        assert cv is None or float(row.intensity_score) == pytest.approx(cv)
    perf = pd.read_csv(res / "evaluate/shift_performance.tsv", sep="\t")
    assert set(perf["set"]) == {"train"} and set(perf["flag"]) >= {"intensity", "grid", "any"}
    review = pd.read_csv(res / "audit/flagged_cases.tsv", sep="\t", dtype=str, keep_default_na=False)
    shifted = review[review["stage"] == "shift"]
    expected = sorted(flags.loc[flags["any_flag"].astype(str) == "True", "subject"])
    assert sorted(shifted["subject"]) == expected
    assert all(r for r in shifted["reason"])
    html = (res / "report.html").read_text(errors="replace")
    assert "Internal vs external validation" in html and "shift_flags.tsv" in html


def test_retention_is_reported_per_set(tiny_run: Path) -> None:
    """results/stats/retention_by_set.tsv: the tiny sheet has one set (train), whose retention is the run's."""
    by_set = pd.read_csv(tiny_run / "results/stats/retention_by_set.tsv", sep="\t")
    overall = pd.read_csv(tiny_run / "results/stats/retention_by_class.tsv", sep="\t")
    assert set(by_set["set"]) == {"train"} and set(by_set["site"]) == {"all"}
    pd.testing.assert_frame_equal(by_set.drop(columns=["set", "site", "n_subjects"]), overall)


def _dry_run_jobs(out: str) -> list[tuple[str, list[str], dict[str, str]]]:
    """(rule, input files, wildcards) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", out):
        head = re.match(r"rule (\w+):", block)
        if head is None:
            continue
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        pairs = [w.split("=", 1) for w in wildcards.group(1).split(", ")] if wildcards else []
        jobs.append((head.group(1), inputs.group(1).split(", ") if inputs else [], dict(pairs)))
    return jobs


def test_test_and_external_subjects_are_never_trained_on(tmp_path: Path, tiny_workdir: Path) -> None:
    """Sheet column set: labelled test / external subjects stay out of the split, the training inputs and the
    post-processing decision; the ensemble of every fold segments them; evaluation scores them per set."""
    wd = _fresh_workdir(tmp_path, tiny_workdir)
    sheet = wd / "resources/demo/subjects.tsv"
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    held_out = sorted(df["subject"])[:1]
    df["set"] = ["external" if s in held_out else "train" for s in df["subject"]]
    df["site"] = ["B" if s in held_out else "A" for s in df["subject"]]
    df.to_csv(sheet, sep="\t", index=False)
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["postprocess"]["largest_component"] = "auto"  # the decision is fitted on cross-validation cases only
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))  # keep the channel order
    proc = run(snakemake_cmd(wd, "-n", "--forceall", "results/evaluate/summary.tsv", configfile=configfile))
    jobs = _dry_run_jobs(proc.stdout + proc.stderr)
    trains = [inputs for rule, inputs, _ in jobs if rule == "train"]
    assert len(trains) == 2
    for inputs in trains:
        assert not [f for f in inputs if any(f"sub-{s}_" in f for s in held_out)], inputs
    predict = {w["subject"]: inputs for rule, inputs, w in jobs if rule == "predict"}
    for subject, inputs in predict.items():
        models = [f for f in inputs if f.endswith("model.pt")]
        assert len(models) == (2 if subject in held_out else 1), (subject, models)
    (decision,) = [inputs for rule, inputs, _ in jobs if rule == "postprocess_decision"]
    assert decision and not [f for f in decision if any(f"sub-{s}_" in f for s in held_out)]
    assert {w["subject"] for rule, _, w in jobs if rule == "evaluate_subject"} == set(df["subject"])


def test_a_bundle_segments_a_new_cohort_without_training(tiny_run: Path, tmp_path: Path, tiny_workdir: Path) -> None:
    """segmentation.bundle: the tiny run's bundle, copied elsewhere, segments a new run's subjects (all declared
    external) with the ensemble of its folds, nothing split or trained; the prediction equals the ensemble's
    computed directly from the same images; a changed byte or another channel order stops the run before any
    job, naming the file or the key."""
    from medpipe.segment.bundle import load_bundle
    from medpipe.segment.infer import predict_case

    bundle_dir = shutil.copytree(tiny_run / "results/bundle", tmp_path / "elsewhere/bundle")
    wd = _fresh_workdir(tmp_path, tiny_workdir)
    sheet = wd / "resources/demo/subjects.tsv"
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    df["set"], df["site"] = "external", "X"
    df.to_csv(sheet, sep="\t", index=False)
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["segmentation"]["bundle"] = str(bundle_dir)
    configfile = tmp_path / "bundle.yaml"
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))  # keep the channel order

    dry = run(snakemake_cmd(wd, "-n", configfile=configfile))
    rules = {rule for rule, _, _ in _dry_run_jobs(dry.stdout + dry.stderr)}
    assert {"predict", "evaluate_summary", "radiomics"} <= rules and not {"split", "train", "bundle"} & rules
    # The domain-shift flags use the thresholds calibrated by the training run, kept in the bundle.
    assert "shift_reference" not in rules
    (shift_inputs,) = [i for rule, i, _ in _dry_run_jobs(dry.stdout + dry.stderr) if rule == "shift_flags"]
    assert str(bundle_dir / "evaluate/shift_reference.json") in shift_inputs

    subject = sorted(df["subject"])[0]
    pred = f"results/predict/sub-{subject}/sub-{subject}_prob.nii.gz"
    run(snakemake_cmd(wd, "--cores", "2", pred, configfile=configfile))
    images = [f"normalise/sub-{subject}/sub-{subject}_{q}.nii.gz" for q in cfg["sequences"]]
    for image in images:  # the same preprocessing as the run that trained the bundle
        assert (wd / "results" / image).read_bytes() == (tiny_run / "results" / image).read_bytes()
    direct = tmp_path / "direct"
    predict_case(
        [str(wd / "results" / i) for i in images],
        [str(m) for m in load_bundle(bundle_dir).models],
        direct / "prob.nii.gz",
        direct / "pred.nii.gz",
        direct / "uncertainty.json",
        subject=subject,
        settings=cfg["segmentation"],
    )
    ours = np.asarray(nib.load(wd / pred).dataobj)
    np.testing.assert_array_equal(ours, np.asarray(nib.load(direct / "prob.nii.gz").dataobj))

    model = bundle_dir / "train/fold-1/model.pt"
    model.write_bytes(model.read_bytes()[:-1] + bytes([model.read_bytes()[-1] ^ 1]))
    fresh = _fresh_workdir(tmp_path / "second", tiny_workdir)
    proc = run(snakemake_cmd(fresh, "-n", configfile=configfile), check=False)
    assert proc.returncode != 0 and "train/fold-1/model.pt" in proc.stdout + proc.stderr
    shutil.rmtree(bundle_dir)
    shutil.copytree(tiny_run / "results/bundle", bundle_dir)
    cfg["sequences"] = dict(reversed(list(cfg["sequences"].items())))
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))  # keep the channel order
    proc = run(snakemake_cmd(fresh, "-n", configfile=configfile), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "sequences: bundle ['T1w', 'T2w'], run ['T2w', 'T1w']" in out
    assert not (fresh / "results").exists()
