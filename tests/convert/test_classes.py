"""Several structures per subject (label.classes): import from RTSTRUCT and NIfTI, priority, refusals, config."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medpipe.convert.classes import LabelClass, check_label_classes, evaluation_labels, label_classes
from medpipe.convert.labels import import_label
from medpipe.core.errors import ConfigError, DataError, DicomError
from tests.convert.test_rtstruct import _square, _write_rtstruct

RIM_CORE = {
    "name": "lesion",
    "rtstruct_roi": ".*",
    "classes": {"rim": {"value": 1, "rtstruct_roi": "^Rim$"}, "core": {"value": 2, "rtstruct_roi": "^Core"}},
    "priority": ["core", "rim"],
}


def _classes(label: dict | None = None) -> list[LabelClass]:
    return label_classes(label or RIM_CORE)


def _import(source: Path, image: Path, out: Path, classes: list[LabelClass] | None) -> Path:
    return import_label(source, image, out, subject="S01", roi_pattern=".*", classes=classes)


def test_classes_in_priority_order_with_default_patterns() -> None:
    classes = _classes()
    assert [(c.name, c.value, c.rtstruct_roi) for c in classes] == [("core", 2, "^Core"), ("rim", 1, "^Rim$")]
    plain = label_classes({"name": "GTV", "rtstruct_roi": "^GTV$", "classes": {"a": {"value": 1}, "b": {"value": 2}}})
    assert [(c.name, c.rtstruct_roi, c.segment) for c in plain] == [("a", "^a$", "^a$"), ("b", "^b$", "^b$")]
    single = label_classes({"name": "GTV", "rtstruct_roi": "^GTV$", "classes": {}})
    assert [(c.name, c.value, c.rtstruct_roi) for c in single] == [("GTV", 1, "^GTV$")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": {"rim": {"value": 1}, "core": {"value": 3}}, "priority": []}, r"values \[1, 3\] must be 1\.\.2"),
        ({"priority": ["core"]}, r"label\.priority: \['core'\] must list every class"),
        ({"priority": ["core", "rim", "rim"]}, "exactly once"),
    ],
)
def test_bad_class_declarations_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        label_classes({**RIM_CORE, **change})


def test_run_config_must_agree_with_the_classes() -> None:
    config = {"label": {**RIM_CORE, "threshold": None}, "segmentation": {"num_classes": 3, "plan": "off"}}
    assert len(check_label_classes(config)) == 2
    with pytest.raises(ConfigError, match=r"num_classes: 2 but label.classes declares 2 class\(es\).*num_classes: 3"):
        check_label_classes({**config, "segmentation": {"num_classes": 2, "plan": "off"}})
    check_label_classes({**config, "segmentation": {"num_classes": 2, "plan": "auto"}})  # the plan counts them
    check_label_classes({**config, "automatic_segmentation": False, "segmentation": {"num_classes": 2}})
    with pytest.raises(ConfigError, match=r"label\.threshold"):
        check_label_classes({**config, "label": {**RIM_CORE, "threshold": 0.5}})


def test_evaluation_rows_are_the_classes_the_whole_structure_and_the_regions() -> None:
    three = {"name": "tumour", "classes": {"enh": {"value": 1}, "necro": {"value": 2}, "edema": {"value": 3}}}
    config = {"label": three, "evaluate": {"regions": {"core": ["necro", "enh"]}}}
    labels = evaluation_labels(config, label_classes({**three, "rtstruct_roi": ".*"}))
    # classes in value order, the whole structure (label.name) as their union, then BraTS' tumour core
    assert labels == {"enh": [1], "necro": [2], "edema": [3], "tumour": [1, 2, 3], "core": [1, 2]}
    single = {"name": "lesion", "rtstruct_roi": ".*", "classes": {}}
    assert evaluation_labels({"label": single}, label_classes(single)) == {"lesion": [1]}  # no duplicate row
    rim_core = label_classes(RIM_CORE)
    for regions, message in [
        ({"core": ["core"]}, r"evaluate\.regions\.core: named like a class"),
        ({"lesion": ["core"]}, r"evaluate\.regions\.lesion: named like a class or label\.name"),
        ({"tc": ["core", "necrosis"]}, r"evaluate\.regions\.tc: \['necrosis'\] not in label\.classes"),
    ]:
        with pytest.raises(ConfigError, match=message):
            evaluation_labels({"label": RIM_CORE, "evaluate": {"regions": regions}}, rim_core)
    with pytest.raises(ConfigError, match=r"label\.classes declares none"):
        evaluation_labels({"label": single, "evaluate": {"regions": {"x": ["lesion"]}}}, label_classes(single))
    clash = {**RIM_CORE, "name": "rim"}
    with pytest.raises(ConfigError, match=r"class 'rim' is named like label\.name"):
        evaluation_labels({"label": clash}, label_classes(clash))


def test_rtstruct_classes_overlap_by_priority_and_the_sidecar_counts_it(tmp_path: Path, converted) -> None:
    image, frame, _ = converted
    rois = {
        "Rim": [_square(1.5, 5.5, 2.5, 6.5, 3), _square(1.5, 5.5, 2.5, 6.5, 4)],  # 4 x 4 on two slices
        "Core_necrotic": [_square(2.5, 4.5, 3.5, 5.5, 3)],  # 2 x 2 inside the rim on slice 3
        "Body": [_square(0, 9, 0, 11, 3)],
    }
    rs = _write_rtstruct(tmp_path / "rs.dcm", rois, frame, "1.2")
    out = _import(rs, image, tmp_path / "mask.nii.gz", _classes())
    mask = np.asarray(nib.load(out).dataobj)
    assert mask.dtype == np.uint8 and sorted(np.unique(mask).tolist()) == [0, 1, 2]
    assert int((mask == 2).sum()) == 4 and int((mask == 1).sum()) == 32 - 4
    record = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    label = record["label"]
    assert label["priority"] == ["core", "rim"] and label["overlaps"] == {"core over rim": 4}
    assert label["classes"]["core"]["n_voxels"] == 4 and label["classes"]["core"]["roi_name"] == "Core_necrotic"
    assert label["classes"]["rim"]["n_voxels"] == 28 and label["classes"]["rim"]["value"] == 1
    assert record["n_voxels"] == 32
    # the other priority gives the overlap to the rim
    other = _import(rs, image, tmp_path / "rim_first.nii.gz", _classes({**RIM_CORE, "priority": ["rim", "core"]}))
    mask = np.asarray(nib.load(other).dataobj)
    assert int((mask == 2).sum()) == 0 and int((mask == 1).sum()) == 32


@pytest.mark.parametrize(
    ("rois", "message"),
    [
        (
            {"Rim": [1], "Core_a": [3], "Core_b": [4]},
            r"class 'core' \(label\.classes\.core\.rtstruct_roi = '\^Core'\): 2 ROI",
        ),
        ({"Rim": [1], "GTV": [3]}, r"class 'core' \(label\.classes\.core\.rtstruct_roi = '\^Core'\): no ROI"),
    ],
)
def test_a_class_pattern_matching_several_rois_or_none_names_subject_file_and_class(
    tmp_path: Path, converted, rois: dict, message: str
) -> None:
    image, frame, _ = converted
    contours = {name: [_square(1.5, 5.5, 2.5, 6.5, k[0])] for name, k in rois.items()}
    rs = _write_rtstruct(tmp_path / "rs.dcm", contours, frame, "1.2")
    with pytest.raises(DicomError, match=message) as err:
        _import(rs, image, tmp_path / "mask.nii.gz", _classes())
    assert "subject S01" in str(err.value) and "rs.dcm" in str(err.value)


def test_nifti_class_values_are_kept_and_others_refused(tmp_path: Path, converted) -> None:
    image, _, _ = converted
    ref = nib.load(image)
    labels = np.zeros(ref.shape[:3], np.uint8)
    labels[2:6, 3:7, 2:5] = 1
    labels[3:5, 4:6, 3] = 2
    nib.save(nib.Nifti1Image(labels, ref.affine), tmp_path / "classes.nii.gz")
    out = _import(tmp_path / "classes.nii.gz", image, tmp_path / "mask.nii.gz", _classes())
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), labels)
    bad = labels.copy()
    bad[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(bad, ref.affine), tmp_path / "bad.nii.gz")
    with pytest.raises(
        DataError, match=r"value\(s\) \[3\] outside the declared classes \{'core': 2, 'rim': 1\}"
    ) as err:
        _import(tmp_path / "bad.nii.gz", image, tmp_path / "mask.nii.gz", _classes())
    assert "subject S01" in str(err.value) and "bad.nii.gz" in str(err.value)
    frac = labels.astype(np.float32)
    frac[0, 0, 0] = 0.7
    nib.save(nib.Nifti1Image(frac, ref.affine), tmp_path / "frac.nii.gz")
    with pytest.raises(DataError, match=r"\[0\.7\] outside the declared classes"):
        _import(tmp_path / "frac.nii.gz", image, tmp_path / "mask.nii.gz", _classes())
    nan = labels.astype(np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, ref.affine), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match="NaN"):
        _import(tmp_path / "nan.nii.gz", image, tmp_path / "mask.nii.gz", _classes())


def test_one_declared_class_is_found_by_its_own_pattern(tmp_path: Path, converted) -> None:
    """label.classes with a single class: its ROI pattern selects, not label.rtstruct_roi (which matches all)."""
    image, frame, _ = converted
    rois = {"Rim": [_square(1.5, 5.5, 2.5, 6.5, 3)], "Body": [_square(0, 9, 0, 11, 3)]}
    rs = _write_rtstruct(tmp_path / "rs.dcm", rois, frame, "1.2")
    one = _classes({"name": "lesion", "rtstruct_roi": ".*", "classes": {"rim": {"value": 1, "rtstruct_roi": "^Rim$"}}})
    out = _import(rs, image, tmp_path / "mask.nii.gz", one)
    mask = np.asarray(nib.load(out).dataobj)
    assert int((mask == 1).sum()) == 16 and set(np.unique(mask).tolist()) == {0, 1}
    record = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    assert record["label"]["classes"]["rim"]["roi_name"] == "Rim"
    with pytest.raises(DicomError, match=r"label\.rtstruct_roi = '\.\*': 2 ROI name\(s\) match '\.\*'"):
        _import(rs, image, tmp_path / "plain.nii.gz", None)
