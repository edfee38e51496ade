"""Several structures per subject through the workflow, on a copy of the tiny run: the demo lesion as two classes
(1 enhancing rim, 2 necrotic core, as the generator writes them) with the config overlay of ``make demo``
(config/demo.yaml). The preprocessing stands; the label import, training, prediction and everything after rerun
with three output classes. Checks: the converted mask holds the classes; evaluation rows per class, the whole lesion
(their union, recomputed here from the masks) and a BraTS-style region; a DICOM-SEG with one segment per class
that reads back exactly; radiomics, reproducibility and retention per region. Then three test-set subjects with bad
class labels (a NIfTI value outside the classes, an RTSTRUCT with two ROIs for one class, one with no ROI for a
class) and a second reader's mask on another grid: with ``--keep-going`` each stops its own import naming subject,
file and class (or grid), and nothing else."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from medpipe.core.config import deep_merge
from medpipe.core.overlap import dice_score
from tests.convert.test_rtstruct import _write_rtstruct
from tests.postprocess.test_export_dicom_seg import readback_dice
from tests.workflow.conftest import REPO, TINY_CONFIG, clone_run, run, snakemake_cmd

DEMO_OVERLAY = REPO / "config" / "demo.yaml"


@pytest.fixture(scope="module")
def classes_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("classes")
    work = clone_run(tiny_run, tmp / "wd", verify=False)
    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    cfg = deep_merge(tiny, yaml.safe_load(DEMO_OVERLAY.read_text()))
    cfg["segmentation"]["train"]["epochs"] = tiny["segmentation"]["train"]["epochs"]  # the tiny schedule
    cfg["evaluate"] = {"regions": {"enhancing": ["rim"]}}  # a one-class region: scored like its class
    cfg["label"]["classes"]["rim"]["rtstruct_roi"] = "^rim"  # RTSTRUCT labels of the bad-label test
    # no mask perturbations: on the tiny 3 mm radiomics grid the eroded human core is below pyradiomics' 10 voxels
    cfg["radiomics"]["perturbations"] = []
    config = tmp / "classes.yaml"  # beside the working directory: _config(work)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = run(snakemake_cmd(work, "--cores", "1", "-n", configfile=config))
    jobs = dry.stdout + dry.stderr
    for rule in ("convert_label", "train", "predict", "evaluate_subject", "export_dicom_seg", "region_mask"):
        assert f"rule {rule}:" in jobs, rule
    for rule in ("n4", "coregister", "skullstrip", "convert_sequence"):  # the images stand
        assert f"rule {rule}:" not in jobs, rule
    run(snakemake_cmd(work, "--cores", "2", configfile=config))
    return work


def _config(work: Path) -> Path:
    return work.parent / "classes.yaml"


def _labelled(work: Path) -> list[str]:
    sheet = pd.read_csv(work / "resources/demo/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
    return sorted(sheet.loc[sheet["label"] != "", "subject"])


def _mask(work: Path, stage: str, subject: str, desc: str) -> np.ndarray:
    return np.asarray(nib.load(work / f"results/{stage}/sub-{subject}/sub-{subject}_desc-{desc}_mask.nii.gz").dataobj)


def test_every_class_and_region_is_scored(classes_run: Path) -> None:
    metrics = pd.read_csv(classes_run / "results/evaluate/metrics.tsv", sep="\t", dtype={"subject": str})
    subjects = _labelled(classes_run)
    assert sorted(metrics["subject"].unique()) == subjects
    for subject in subjects:
        human = _mask(classes_run, "convert", subject, "human")
        label = np.asarray(nib.load(classes_run / f"resources/demo/labels/{subject}_lesion.nii.gz").dataobj)
        np.testing.assert_array_equal(human, label)  # the generator's classes, imported as they are
        assert set(np.unique(human)) == {0, 1, 2}
        auto = _mask(classes_run, "postprocess", subject, "auto")
        assert set(np.unique(auto)) <= {0, 1, 2}
        rows = metrics[metrics["subject"] == subject].set_index("label")
        assert sorted(rows.index) == ["core", "enhancing", "lesion", "rim"]
        assert {k: str(v) for k, v in rows["label_value"].items()} == {
            "rim": "1",
            "core": "2",
            "lesion": "1+2",
            "enhancing": "1",
        }
        expected = {
            "rim": dice_score(auto == 1, human == 1),
            "core": dice_score(auto == 2, human == 2),
            "lesion": dice_score(auto > 0, human > 0),
        }
        expected["enhancing"] = expected["rim"]
        for name, dice in expected.items():
            assert rows.loc[name, "dice"] == pytest.approx(dice, abs=1e-9), (subject, name)
    summary = pd.read_csv(classes_run / "results/evaluate/summary.tsv", sep="\t")
    assert {"rim", "core", "lesion", "enhancing"} <= set(summary["label"])


def test_the_dicom_seg_has_one_segment_per_class_that_reads_back_exactly(classes_run: Path) -> None:
    for subject in _labelled(classes_run)[:2]:
        folder = classes_run / f"results/postprocess/sub-{subject}"
        out = folder / f"sub-{subject}_desc-auto_mask.dcm"
        seg = hd.seg.segread(out)
        assert [(int(s.SegmentNumber), str(s.SegmentLabel)) for s in seg.SegmentSequence] == [(1, "rim"), (2, "core")]
        auto = nib.load(folder / f"sub-{subject}_desc-auto_mask.nii.gz")
        for number in (1, 2):
            if not np.any(np.asarray(auto.dataobj) == number):
                continue  # a class the tiny model did not predict has an empty segment
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                dice, n = readback_dice(out, auto, segment=number, value=number)
            assert dice == 1.0 and n > 0, (subject, number)


def test_radiomics_and_retention_are_per_region(classes_run: Path) -> None:
    features = pd.read_csv(
        classes_run / "results/radiomics/features.tsv", sep="\t", dtype={"subject": str}, low_memory=False
    )
    subjects = _labelled(classes_run)
    counts = features.groupby(["region", "source"])["subject"].nunique()
    for region in ("lesion", "rim", "core"):
        for source in ("human", "auto"):
            assert counts.get((region, source), 0) == len(subjects), (region, source)
    volume = features[(features["feature"] == "original_shape_VoxelVolume") & (features["source"] == "human")]
    by_region = volume.pivot_table(index="subject", columns="region", values="value", aggfunc="first")
    # the rim and the core tile the lesion
    np.testing.assert_allclose(by_region["rim"] + by_region["core"], by_region["lesion"], rtol=1e-6)
    for table in ("reproducibility.tsv", "retention_by_class.tsv"):
        stats = pd.read_csv(classes_run / "results/stats" / table, sep="\t")
        assert {"lesion", "rim", "core"} <= set(stats["region"]), table


def _square_on_middle_slice(series: Path) -> tuple[list[float], str, str]:
    """A 10-pixel square contour (LPS mm) on the series' middle slice, its frame of reference and SOP UID."""
    files = sorted(series.glob("*.dcm"))
    ds = pydicom.dcmread(files[len(files) // 2], stop_before_pixels=True)
    ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    corners = [
        ipp + c * col_spacing * iop[:3] + r * row_spacing * iop[3:] for c, r in ((20, 20), (30, 20), (30, 30), (20, 30))
    ]
    return [float(v) for p in corners for v in p], str(ds.FrameOfReferenceUID), str(ds.SOPInstanceUID)


def _add_bad_subjects(work: Path) -> dict[str, str]:
    """Three test-set copies of the first subject with bad class labels; subject -> what its log must say."""
    sheet = pd.read_csv(work / "resources/demo/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
    source = sheet.iloc[0]
    labels = work / "resources/demo/labels"
    square, frame, sop = _square_on_middle_slice(work / source["dicom"] / "T1w")
    img = nib.load(work / source["label"])
    outside = np.asarray(img.dataobj).copy()
    outside[np.nonzero(outside)[0][0], np.nonzero(outside)[1][0], np.nonzero(outside)[2][0]] = 3
    nib.save(nib.Nifti1Image(outside, img.affine), labels / "BADVALUE_lesion.nii.gz")
    _write_rtstruct(labels / "BADTWO_RS.dcm", {"rim": [square], "core": [square], "rim_inner": [square]}, frame, sop)
    _write_rtstruct(labels / "BADNONE_RS.dcm", {"rim": [square]}, frame, sop)
    expect = {
        "BADVALUE": r"value\(s\) \[3\] outside the declared classes \{'rim': 1, 'core': 2\}",
        "BADTWO": r"class 'rim' \(label\.classes\.rim\.rtstruct_roi = '\^rim'\): 2 ROI name\(s\) match",
        "BADNONE": r"class 'core' \(label\.classes\.core\.rtstruct_roi = '\^core\$'\): no ROI name\(s\) match",
    }
    files = {"BADVALUE": "BADVALUE_lesion.nii.gz", "BADTWO": "BADTWO_RS.dcm", "BADNONE": "BADNONE_RS.dcm"}
    rows = []
    for subject, name in files.items():
        folder = work / "resources/demo/dicom" / subject
        shutil.copytree(work / source["dicom"], folder)
        rows.append(
            {"subject": subject, "dicom": str(folder.relative_to(work)), "label": f"resources/demo/labels/{name}"}
        )
    # a second reader's mask on another grid (half a voxel off) for the first subject
    shifted = img.affine.copy()
    shifted[:3, 3] += 0.5 * np.abs(np.diag(img.affine)[:3])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), labels / "reader2_offgrid.nii.gz")
    sheet["label2"] = ["resources/demo/labels/reader2_offgrid.nii.gz", *([""] * (len(sheet) - 1))]
    sheet["set"] = "train"
    bad = pd.DataFrame(rows).assign(set="test", label2="")
    pd.concat([sheet, bad]).to_csv(work / "resources/demo/subjects.tsv", sep="\t", index=False)
    expect[str(source["subject"])] = r"GeometryError: .*not the reference grid"
    return expect


def test_a_bad_class_label_stops_only_its_own_subject(classes_run: Path, tmp_path: Path) -> None:
    work = clone_run(classes_run, tmp_path / "wd", verify=False)
    expect = _add_bad_subjects(work)
    good = _labelled(classes_run)
    proc = run(snakemake_cmd(work, "--cores", "2", "--keep-going", configfile=_config(classes_run)), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a run with bad labels must not report success"
    failed = re.findall(r"^Error in rule (\w+):\n((?:    .*\n)+)", out, flags=re.MULTILINE)
    reader = good[0]
    rule_of = {s: "convert_reader2" if s == reader else "convert_label" for s in expect}
    subjects = [(rule, re.search(r"sub-(\w+?)[._/]", block)) for rule, block in failed]
    assert sorted((rule, m.group(1)) for rule, m in subjects if m) == sorted((r, s) for s, r in rule_of.items())
    for subject, message in expect.items():
        log = (work / f"logs/{rule_of[subject]}/sub-{subject}.log").read_text()
        assert re.search(message, log) and subject in log, log[-2000:]
        files = r"BADVALUE_lesion\.nii\.gz|BADTWO_RS\.dcm|BADNONE_RS\.dcm|reader2_offgrid\.nii\.gz"
        assert re.search(rf"file \S*({files})", log), log[-2000:]
        if subject == reader:
            continue  # the first reader's results stand (below)
        # the subject's own jobs that need no label went on: it was predicted (by the ensemble of the fold models);
        # what reads its label (postprocess QC, evaluation, radiomics) waits for the fix
        assert (work / f"results/predict/sub-{subject}/sub-{subject}_pred.nii.gz").is_file()
        assert not (work / f"results/evaluate/sub-{subject}").exists()
    for subject in good:  # the other subjects keep their results
        assert (work / f"results/evaluate/sub-{subject}/sub-{subject}_metrics.tsv").is_file()
    failures = pd.read_csv(work / "logs/failed_jobs.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert dict(zip(failures["subject"], failures["rule"], strict=True)) == rule_of
    for row in failures.itertuples():
        assert re.search(expect[row.subject], row.comment), row.comment
