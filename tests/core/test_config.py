"""Tests of medpipe.core.config: schema validation of config.yaml and the subject sheet."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medpipe.core.config import (
    check_radiomics_only,
    load_subject_sheet,
    native_images,
    native_mask_files,
    nifti_inputs,
    radiomics_images,
    section_schema,
    validate_config,
    with_defaults,
)
from medpipe.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO / "config/schemas/config.schema.yaml"
SHEET_SCHEMA = REPO / "config/schemas/subjects.schema.yaml"


def _config() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_shipped_configs_are_valid() -> None:
    validate_config(_config(), CONFIG_SCHEMA)
    validate_config(yaml.safe_load((REPO / "tests/workflow/config.yaml").read_text()), CONFIG_SCHEMA)


def test_defaults_are_filled() -> None:
    cfg = {"subjects": "s.tsv", "sequences": {"T1w": {"series_description": "T1"}}, "reference_sequence": "T1w"}
    validate_config(cfg, CONFIG_SCHEMA)
    assert cfg["seed"] == 42 and cfg["deterministic"] is True
    assert cfg["postprocess"]["largest_component"] is True
    assert cfg["sequences"]["T1w"]["exclude_image_type"] == ["LOCALIZER", "SCOUT"]


def test_every_problem_is_named() -> None:
    cfg = _config()
    cfg["postprocess"]["largest_componnent"] = True
    cfg["stats"]["ccc_cutoff"] = 1.5
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, CONFIG_SCHEMA)
    msg = str(err.value)
    assert "postprocess: Additional properties are not allowed ('largest_componnent' was unexpected)" in msg
    assert "stats.ccc_cutoff: 1.5 is greater than the maximum of 1" in msg


def test_reference_sequence_must_be_configured() -> None:
    cfg = _config()
    cfg["reference_sequence"] = "FLAIR"
    with pytest.raises(ConfigError, match="reference_sequence: 'FLAIR'"):
        validate_config(cfg, CONFIG_SCHEMA)


def test_subject_sheet(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    (tmp_path / "m1.nii.gz").write_bytes(b"")
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\tdicom\tlabel\nA1\td1\tm1.nii.gz\nB2\td1\t\n")
    df = load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path)
    assert list(df.index) == ["A1", "B2"] and df.loc["B2", "label"] == ""


def test_subject_sheet_sets_and_sites(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\tdicom\tset\tsite\nA1\td1\t\t\nB2\td1\texternal\tKHUH\nC3\td1\ttest\t\n")
    df = load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path)
    assert df["set"].to_dict() == {"A1": "train", "B2": "external", "C3": "test"}  # empty cell: schema default
    assert df["site"].to_dict() == {"A1": "", "B2": "KHUH", "C3": ""}
    # A sheet without the columns gets them with the schema's defaults.
    sheet.write_text("subject\tdicom\nA1\td1\n")
    df = load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path)
    assert (df.loc["A1", "set"], df.loc["A1", "site"], df.loc["A1", "label"]) == ("train", "", "")
    sheet.write_text("subject\tdicom\tset\tsite\nA1\td1\tvalidation\t\nB2\td1\ttrain\tsite 2\n")
    with pytest.raises(ConfigError) as err:
        load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path)
    assert "row 2 (A1): set: 'validation' is not one of ['train', 'test', 'external']" in str(err.value)
    assert "row 3 (B2): site: 'site 2'" in str(err.value)


def test_subject_sheet_errors_name_rows(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\tdicom\tlabel\nA1\td1\t\nbad id\td1\t\nC3\tmissing\t\nA1\td1\tnope.nii\n")
    with pytest.raises(ConfigError) as err:
        load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path)
    msg = str(err.value)
    assert "row 3 (bad id): subject" in msg
    assert "row 4 (C3): dicom folder 'missing' does not exist" in msg
    assert "row 5 (A1): label file 'nope.nii' does not exist" in msg
    assert "duplicated subject IDs: ['A1']" in msg


def test_a_second_reader_needs_a_first_reader_and_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    (tmp_path / "h.nii.gz").write_bytes(b"")
    sheet = tmp_path / "s.tsv"
    sheet.write_text(
        "subject\tdicom\tlabel\tlabel2\nA1\td1\th.nii.gz\th.nii.gz\nB2\td1\t\th.nii.gz\nC3\td1\th.nii.gz\tr2.nii\n"
    )
    with pytest.raises(ConfigError) as err:
        load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path)
    msg = str(err.value)
    assert "row 3 (B2): label2 (a second reader) needs label (the first)" in msg
    assert "row 4 (C3): label2 file 'r2.nii' does not exist" in msg
    assert "A1" not in msg
    sheet.write_text("subject\tdicom\tlabel\nA1\td1\th.nii.gz\n")  # no label2 column: none, as before
    assert load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path).loc["A1", "label2"] == ""


def test_missing_sheet_tells_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="demo-data"):
        load_subject_sheet(tmp_path / "none.tsv", SHEET_SCHEMA)


def test_nifti_reference_refuses_dicom_seg_export() -> None:
    cfg = _config()
    cfg["sequences"] = {"T1w": {"nifti": "MR_T1_image.nii.gz"}}
    with pytest.raises(ConfigError, match=r"postprocess.dicom_seg.*sequences.T1w.nifti is 'MR_T1_image.nii.gz'"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg["postprocess"]["dicom_seg"] = False
    validate_config(cfg, CONFIG_SCHEMA)
    assert nifti_inputs(cfg) == ["MR_T1_image.nii.gz"]
    cfg["sequences"]["T1w"]["nifti"] = "image.mha"
    with pytest.raises(ConfigError, match=r"sequences.T1w.nifti: 'image.mha' does not match"):
        validate_config(cfg, CONFIG_SCHEMA)


def test_aligning_onto_the_brain_needs_a_skull_stripping_method() -> None:
    cfg = _config()
    cfg["preprocess"]["coregister"] = {"fixed": "brain"}
    cfg["preprocess"]["skullstrip"] = {"method": "none"}
    with pytest.raises(ConfigError, match=r"coregister.fixed: brain .* preprocess.skullstrip.method is none"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg["preprocess"]["skullstrip"] = {"method": "deepbet"}
    assert validate_config(cfg, CONFIG_SCHEMA)["preprocess"]["coregister"]["fixed"] == "brain"


def test_sheet_names_subjects_without_the_nifti_file(tmp_path: Path) -> None:
    for name in ("A1", "B2"):
        (tmp_path / name).mkdir()
    (tmp_path / "A1" / "MR_T1_image.nii.gz").write_bytes(b"")
    sheet = tmp_path / "s.tsv"
    sheet.write_text("subject\tdicom\nA1\tA1\nB2\tB2\n")
    with pytest.raises(ConfigError, match=r"row 3 \(B2\): folder 'B2' has no 'MR_T1_image.nii.gz'") as err:
        load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path, required_files=["MR_T1_image.nii.gz"])
    assert "A1" not in str(err.value).split("invalid subject sheet:")[1]


def test_n4_modality_defaults_and_overrides_come_from_the_schema() -> None:
    s = with_defaults({}, "preprocess", "n4")
    assert s["modalities"] == {"MR": True, "CT": False, "PT": False} and s["per_sequence"] == {}
    node = section_schema("preprocess", "n4", "modalities")
    assert node["default"] == {k: v["default"] for k, v in node["properties"].items()}
    s = with_defaults({"modalities": {"CT": True}, "per_sequence": {"T2w": False}}, "preprocess", "n4")
    assert s["modalities"] == {"MR": True, "CT": True, "PT": False} and s["per_sequence"] == {"T2w": False}
    with pytest.raises(ConfigError, match=r"preprocess.n4.per_sequence.T2w: 'no' is not of type 'boolean'"):
        with_defaults({"per_sequence": {"T2w": "no"}}, "preprocess", "n4")


def test_sequence_modality_is_ct_mr_or_pt_and_one_for_nifti() -> None:
    cfg = _config()
    cfg["sequences"]["T1w"]["modality"] = "MR"
    cfg["sequences"]["T2w"]["modality"] = ["MR", "CT"]  # DICOM: the series must have one of them
    validate_config(cfg, CONFIG_SCHEMA)
    cfg = _config()
    cfg["sequences"]["T2w"]["modality"] = "US"
    with pytest.raises(ConfigError, match=r"sequences.T2w.modality: 'US' is not valid"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg = _config()
    cfg["postprocess"]["dicom_seg"] = False
    cfg["sequences"] = {"T1w": {"nifti": "MR_T1_image.nii.gz", "modality": ["MR", "CT"]}}
    with pytest.raises(ConfigError, match=r"sequences.T1w.modality: a NIfTI input needs exactly one of"):
        validate_config(cfg, CONFIG_SCHEMA)


def test_radiomics_only_needs_human_sources_and_a_label(caplog: pytest.LogCaptureFixture) -> None:
    cfg = _config()
    validate_config(cfg, CONFIG_SCHEMA)
    assert cfg["automatic_segmentation"] is True  # the default: segmentation runs
    check_radiomics_only(cfg, ["a", "b"], [])  # no check when segmentation runs
    cfg = _config()
    cfg["automatic_segmentation"] = False
    with pytest.raises(ConfigError, match=r"radiomics.sources: lists 'auto'.*set radiomics.sources: \[human\]"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg["radiomics"]["sources"] = ["human"]
    validate_config(cfg, CONFIG_SCHEMA)
    with pytest.raises(ConfigError, match="no subject has a label"):
        check_radiomics_only(cfg, ["a", "b"], [])
    with caplog.at_level("WARNING"):
        check_radiomics_only(cfg, ["a", "b"], ["a"])
    assert "without a label get no features: b" in caplog.text


def test_radiomics_images_default_to_the_reference_and_must_be_sequences() -> None:
    cfg = _config()
    validate_config(cfg, CONFIG_SCHEMA)
    assert radiomics_images(cfg) == {"T1w": "config/radiomics/mr.yaml"}  # empty: the reference only
    cfg = _config()
    cfg["radiomics"]["images"] = {"T2w": {"params": "config/radiomics/t2.yaml"}, "T1w": {}}
    validate_config(cfg, CONFIG_SCHEMA)
    assert radiomics_images(cfg) == {"T2w": "config/radiomics/t2.yaml", "T1w": "config/radiomics/mr.yaml"}
    cfg = _config()
    cfg["radiomics"]["images"] = {"T1w": {}, "ADC": {}}
    with pytest.raises(ConfigError, match=r"radiomics.images: 'ADC' is not a sequence.*\['T1w', 'T2w'\]"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg["sequences"]["all"] = dict(cfg["sequences"]["T2w"])
    cfg["radiomics"]["images"] = {"T1w": {}, "all": {}}
    with pytest.raises(ConfigError, match=r"radiomics.images: 'all' names the pooled rows"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg["radiomics"]["images"] = {"T1w": {"param": "x.yaml"}}
    with pytest.raises(ConfigError, match=r"radiomics.images.T1w: Additional properties"):
        validate_config(cfg, CONFIG_SCHEMA)


def test_native_grid_images_and_their_own_masks(tmp_path: Path) -> None:
    cfg = _config()
    cfg["radiomics"]["images"] = {"T1w": {}, "T2w": {"grid": "native", "mask": "t2_mask.nii.gz"}}
    validate_config(cfg, CONFIG_SCHEMA)
    assert native_images(cfg) == {"T2w": "t2_mask.nii.gz"} and native_mask_files(cfg) == ["t2_mask.nii.gz"]
    cfg["radiomics"]["images"]["T2w"] = {"grid": "native"}  # the reference mask brought onto its grid
    assert native_images(cfg) == {"T2w": None} and native_mask_files(cfg) == []
    cfg["radiomics"]["images"] = {"T1w": {"grid": "native"}}
    with pytest.raises(ConfigError, match=r"radiomics.images.T1w.grid: 'native' for the reference sequence"):
        validate_config(cfg, CONFIG_SCHEMA)
    cfg["radiomics"]["images"] = {"T2w": {"mask": "t2_mask.nii.gz"}}
    with pytest.raises(ConfigError, match=r"radiomics.images.T2w.mask: 't2_mask.nii.gz' .*grid: 'reference'"):
        validate_config(cfg, CONFIG_SCHEMA)
    # Every labelled subject's folder must hold the image's own mask; an unlabelled one need not.
    for subject in ("s1", "s2", "s3"):
        (tmp_path / subject).mkdir()
        (tmp_path / subject / "label.nii.gz").write_bytes(b"x")
    (tmp_path / "s1" / "t2_mask.nii.gz").write_bytes(b"x")
    sheet = tmp_path / "subjects.tsv"
    sheet.write_text("subject\tdicom\tlabel\ns1\ts1\ts1/label.nii.gz\ns2\ts2\t\ns3\ts3\ts3/label.nii.gz\n")
    with pytest.raises(ConfigError, match=r"row 4 \(s3\): folder 's3' has no 't2_mask.nii.gz' \(a radiomics.images"):
        load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path, labelled_files=["t2_mask.nii.gz"])
    (tmp_path / "s3" / "t2_mask.nii.gz").write_bytes(b"x")
    df = load_subject_sheet(sheet, SHEET_SCHEMA, base_dir=tmp_path, labelled_files=["t2_mask.nii.gz"])
    assert list(df.index) == ["s1", "s2", "s3"]


_KEYWORDS = {
    "type",
    "enum",
    "default",
    "description",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "minProperties",
    "required",
    "oneOf",
    "anyOf",
    "allOf",
    "if",
    "then",
    "else",
    "$schema",
    "title",
    "const",
    "uniqueItems",
    "propertyNames",
    "not",
}


@pytest.mark.parametrize("schema", [CONFIG_SCHEMA, SHEET_SCHEMA], ids=lambda p: p.name)
def test_schema_nodes_hold_only_json_schema_keywords(schema: Path) -> None:
    """A comma in an unquoted flow-mapping description splits it into a stray key: such keys are caught here."""

    def walk(node: object, where: str) -> list[str]:
        if isinstance(node, list):
            return [bad for i, item in enumerate(node) for bad in walk(item, f"{where}[{i}]")]
        if not isinstance(node, dict):
            return []
        bad = [f"{where}.{k}" for k in node if k not in _KEYWORDS]
        for key, value in node.items():
            if key == "properties":
                bad += [b for name, sub in value.items() for b in walk(sub, f"{where}.{name}")]
            elif key in (
                "additionalProperties",
                "items",
                "if",
                "then",
                "else",
                "oneOf",
                "anyOf",
                "allOf",
                "propertyNames",
                "not",
            ):
                bad += walk(value, f"{where}.{key}")
        return bad

    assert walk(yaml.safe_load(schema.read_text()), "") == []


def test_radiomics_regions_take_schema_defaults_and_refuse_bad_definitions() -> None:
    cfg = _config()
    cfg["radiomics"]["regions"] = {"ring10": {"ring_mm": 10}}
    validate_config(cfg, CONFIG_SCHEMA)
    assert cfg["radiomics"]["regions"] == {"ring10": {"ring_mm": 10, "clip": "image"}}
    for bad, where in (
        ({"ring10": {"ring_mm": 0}}, "ring_mm"),
        ({"ring10": {"clip": "body"}}, "ring10: {'clip': 'body'} is not valid"),  # neither ring_mm nor classes
        ({"ring10": {"ring_mm": 5, "clip": "air"}}, "clip"),
        ({"ring-10": {"ring_mm": 5}}, "ring-10"),
    ):
        cfg = _config()
        cfg["radiomics"]["regions"] = bad
        with pytest.raises(ConfigError, match=where):
            validate_config(cfg, CONFIG_SCHEMA)
