"""External subjects of the demo cohort: a second, deliberately shifted scanner (demo.n_external, external_shift).

Two three-subject cohorts with the same seed on a coarse 4 mm grid are generated once per module: ``a`` with
no external subject and ``b`` whose last subject (demo03) is external. ``a``'s demo03 is then the twin of
``b``'s demo03 acquired on the site-A scanner, so every difference between the two is the scanner profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage as ndi

from medpipe.core.config import SUBJECTS_SCHEMA, load_subject_sheet, with_defaults
from medpipe.core.errors import ConfigError
from medpipe.demo import DemoSettings, ScannerProfile, generate_demo_cohort

from .test_demo import canonical, read_series

SPACING = (4.0, 4.0, 4.0)
SHIFT = with_defaults({}, "demo", "external_shift")  # the schema defaults, the profile under test
SITE_A = DemoSettings(n_subjects=3, seed=5, spacing_mm=SPACING)
WITH_EXTERNAL = DemoSettings(n_subjects=3, seed=5, spacing_mm=SPACING, n_external=1)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("external")
    generate_demo_cohort(root / "a", SITE_A)
    generate_demo_cohort(root / "b", WITH_EXTERNAL)
    return root / "a", root / "b"


def nii(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).astype(np.float64)


def image(cohort: Path, subject: str, sequence: str) -> np.ndarray:
    """The DICOM series as a volume on the truth NIfTI grid (RAS+ canonical order)."""
    return canonical(*read_series(cohort / "dicom" / subject / sequence)[:2])[0]


def pixel_data(cohort: Path, subject: str, sequence: str) -> list[bytes]:
    files = sorted((cohort / "dicom" / subject / sequence).glob("IM*.dcm"))
    return [pydicom.dcmread(p).PixelData for p in files]


def zscore(vol: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The pipeline's normalisation: zero mean, unit SD inside the brain."""
    return (vol - vol[brain].mean()) / vol[brain].std()


def test_defaults_come_from_the_schema_and_the_make_demo_config_has_4_external() -> None:
    import yaml

    default = DemoSettings()
    assert default.n_external == with_defaults({}, "demo")["n_external"] == 0
    assert default.external_shift == ScannerProfile(**SHIFT)
    assert SHIFT["noise_factor"] > 1.5 and 0.0 < SHIFT["gamma"] < 0.9 and SHIFT["bias_factor"] > 1.0
    config = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())
    demo = DemoSettings.from_config(config["demo"])
    assert (demo.n_subjects, demo.n_test, demo.n_external) == (16, 2, 4)
    assert [s for s, (subset, _) in demo.sites().items() if subset == "external"] == [
        "demo13",
        "demo14",
        "demo15",
        "demo16",
    ]
    assert demo.sites()["demo11"] == demo.sites()["demo12"] == ("test", "demo-A")
    assert sum(subset == "train" for subset, _ in demo.sites().values()) == 10
    assert demo.scanner("demo12") == demo.scanner("demo01") != demo.scanner("demo13")


def test_sheet_marks_the_last_subjects_external(twins: tuple[Path, Path]) -> None:
    a, b = twins
    # without external subjects the sheet is unchanged (subject, dicom, label)
    assert (a / "subjects.tsv").read_text().splitlines()[0].split("\t") == ["subject", "dicom", "label"]
    rows = [r.split("\t") for r in (b / "subjects.tsv").read_text().splitlines()]
    assert rows[0] == ["subject", "dicom", "label", "set", "site"]
    assert [(r[0], r[3], r[4]) for r in rows[1:]] == [
        ("demo01", "train", "demo-A"),
        ("demo02", "train", "demo-A"),
        ("demo03", "external", "demo-B"),
    ]
    sheet = load_subject_sheet(b / "subjects.tsv", SUBJECTS_SCHEMA)  # the workflow's reader accepts it
    assert sheet["set"].to_dict() == {"demo01": "train", "demo02": "train", "demo03": "external"}
    assert set(load_subject_sheet(a / "subjects.tsv", SUBJECTS_SCHEMA)["set"]) == {"train"}
    for cohort, settings in ((a, SITE_A), (b, WITH_EXTERNAL)):
        manifest = json.loads((cohort / "demo_manifest.json").read_text())
        assert "truth/sites.tsv" in manifest["files"]
        assert manifest["parameters"]["n_external"] == settings.n_external
        assert manifest["parameters"]["external_shift"] == SHIFT


def test_site_a_pixel_data_does_not_depend_on_n_external(twins: tuple[Path, Path]) -> None:
    a, b = twins
    for subject in ("demo01", "demo02"):
        for sequence in ("T1w", "T2w"):
            assert pixel_data(a, subject, sequence) == pixel_data(b, subject, sequence), (subject, sequence)
        for name in ("T1w_clean", "biasfield_T1w", "biasfield_T2w", "lesion_parts"):
            rel = Path("truth") / subject / f"{name}.nii.gz"
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # the external subject shares its anatomy and lesion with its site-A twin, not its pixels
    assert (a / "truth/demo03/lesion.nii.gz").read_bytes() == (b / "truth/demo03/lesion.nii.gz").read_bytes()
    for sequence in ("T1w", "T2w"):
        pairs = zip(pixel_data(a, "demo03", sequence), pixel_data(b, "demo03", sequence), strict=True)
        differ = [x != y for x, y in pairs]
        assert sum(differ) > 0.9 * len(differ)


def test_truth_records_the_scanner_profile(twins: tuple[Path, Path]) -> None:
    a, b = twins
    sites = pd.read_csv(b / "truth" / "sites.tsv", sep="\t").set_index("subject")
    assert list(sites.columns) == ["set", "site", "noise_factor", "gamma", "bias_factor"]
    assert sites.loc["demo03"].to_dict() == {"set": "external", "site": "demo-B", **SHIFT}
    for subject in ("demo01", "demo02"):
        assert sites.loc[subject].to_dict() == {
            "set": "train",
            "site": "demo-A",
            "noise_factor": 1.0,
            "gamma": 1.0,
            "bias_factor": 1.0,
        }
    assert set(pd.read_csv(a / "truth" / "sites.tsv", sep="\t")["site"]) == {"demo-A"}
    rec_a = json.loads((a / "truth/demo03/subject.json").read_text())
    rec_b = json.loads((b / "truth/demo03/subject.json").read_text())
    assert rec_b["scanner"] == SHIFT and rec_a["scanner"] == {"noise_factor": 1.0, "gamma": 1.0, "bias_factor": 1.0}
    for sequence in ("T1w", "T2w"):  # the recorded noise level is the applied one
        ratio = rec_b[f"noise_sigma_{sequence}"] / rec_a[f"noise_sigma_{sequence}"]
        assert ratio == pytest.approx(SHIFT["noise_factor"], rel=1e-5)


def test_external_image_is_shifted_in_noise_contrast_and_bias(twins: tuple[Path, Path]) -> None:
    a, b = twins
    ta, tb = a / "truth" / "demo03", b / "truth" / "demo03"
    clean_a, clean_b = nii(ta / "T1w_clean.nii.gz"), nii(tb / "T1w_clean.nii.gz")
    bias_a, bias_b = nii(ta / "biasfield_T1w.nii.gz"), nii(tb / "biasfield_T1w.nii.gz")
    img_a, img_b = image(a, "demo03", "T1w"), image(b, "demo03", "T1w")
    brain = nii(ta / "brainmask.nii.gz") > 0
    parts = nii(ta / "lesion_parts.nii.gz")
    # contrast: the stored clean signal is the site-A signal through the gamma curve (a non-linear change)
    np.testing.assert_allclose(clean_b, 1000.0 * (clean_a / 1000.0) ** SHIFT["gamma"], rtol=1e-4, atol=1e-3)
    # bias: the same smooth field, its log amplitude times bias_factor (fields are quantised to 1/4096)
    amplitude_ratio = np.abs(np.log(bias_b)).max() / np.abs(np.log(bias_a)).max()
    assert amplitude_ratio == pytest.approx(SHIFT["bias_factor"], rel=0.03)
    # noise: in the air, where both images are pure Rician noise from the same draws, SD scales exactly
    air = ndi.binary_erosion(clean_a < 1e-3, iterations=2)
    assert air.sum() > 5000
    assert img_b[air].std() / img_a[air].std() == pytest.approx(SHIFT["noise_factor"], rel=0.01)
    # ... and in white matter, around the known (biased) signal
    wm = brain & (parts == 0) & (clean_a > 900)
    assert wm.sum() > 500
    resid_a, resid_b = img_a - clean_a * bias_a, img_b - clean_b * bias_b
    assert resid_b[wm].std() / resid_a[wm].std() == pytest.approx(SHIFT["noise_factor"], rel=0.1)


def test_shift_survives_bias_correction_and_zscore_and_lesion_stays_visible(twins: tuple[Path, Path]) -> None:
    a, b = twins
    ta, tb = a / "truth" / "demo03", b / "truth" / "demo03"
    clean_a, clean_b = nii(ta / "T1w_clean.nii.gz"), nii(tb / "T1w_clean.nii.gz")
    brain = nii(ta / "brainmask.nii.gz") > 0
    parts = nii(ta / "lesion_parts.nii.gz")
    normal = brain & (parts == 0)
    wm, gm = normal & (clean_a > 900), normal & (clean_a > 560) & (clean_a < 680)
    # a linear gain/offset would vanish under z-scoring; the gamma curve does not (noise-free signal)
    za, zb = zscore(clean_a, brain), zscore(clean_b, brain)
    assert za[parts == 1].mean() - zb[parts == 1].mean() > 0.3  # bright rim pulled in
    assert zb[normal & (clean_a < 250)].mean() < za[normal & (clean_a < 250)].mean() - 0.2  # CSF pushed out
    # acquired images after a perfect bias correction (the truth field) and z-scoring in the brain
    za = zscore(image(a, "demo03", "T1w") / nii(ta / "biasfield_T1w.nii.gz"), brain)
    zb = zscore(image(b, "demo03", "T1w") / nii(tb / "biasfield_T1w.nii.gz"), brain)

    def cnr(z: np.ndarray) -> float:
        return float((z[wm].mean() - z[gm].mean()) / np.sqrt(0.5 * (z[wm].var() + z[gm].var())))

    assert zb[wm].std() > 1.8 * za[wm].std()
    assert cnr(zb) < 0.5 * cnr(za)
    assert cnr(zb) > 1.5  # grey and white matter still distinguishable
    lesion = (parts == 1) | (parts == 2)
    shell = ndi.binary_dilation(lesion, iterations=2) & ~lesion & brain
    rim = (zb[parts == 1].mean() - zb[shell].mean()) / zb[shell].std()
    core = (zb[parts == 2].mean() - zb[shell].mean()) / zb[shell].std()
    assert rim > 1.5 and core < -1.0  # the lesion stays visible on the external scanner


def test_external_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"demo\.n_external: 3 .*must be smaller than demo\.n_subjects \(3\)"):
        DemoSettings.from_config({"n_subjects": 3, "n_external": 3})
    with pytest.raises(ConfigError, match=r"demo\.n_external: 5 .*must be smaller than demo\.n_subjects \(2\)"):
        DemoSettings(n_subjects=2, n_external=5).validate()
    with pytest.raises(ConfigError, match=r"demo\.n_external: 1 \(\+ demo\.n_test: 2\) must be smaller"):
        DemoSettings(n_subjects=3, n_external=1, n_test=2).validate()
    with pytest.raises(ConfigError, match=r"demo\.n_external: -1 is less than the minimum of 0"):
        DemoSettings.from_config({"n_external": -1})
    for gamma in (0, -0.5):
        with pytest.raises(ConfigError, match=rf"demo\.external_shift\.gamma: {gamma} is less than or equal"):
            DemoSettings.from_config({"n_subjects": 3, "n_external": 1, "external_shift": {"gamma": gamma}})
        with pytest.raises(ConfigError, match=rf"demo\.external_shift\.gamma: {gamma}"):
            DemoSettings(external_shift=ScannerProfile(gamma=gamma)).validate()
    with pytest.raises(ConfigError, match=r"demo\.external_shift\.noise_factor: 0\.5 is less than the minimum"):
        DemoSettings.from_config({"external_shift": {"noise_factor": 0.5}})
    with pytest.raises(ConfigError, match=r"demo\.external_shift: .*'noise' was unexpected"):
        DemoSettings.from_config({"external_shift": {"noise": 2.0}})
    with pytest.raises(ConfigError, match=r"demo\.external_shift: must be a mapping, got 2\.5"):
        DemoSettings.from_config({"external_shift": 2.5})
    partial = DemoSettings.from_config({"n_subjects": 4, "n_external": 2, "external_shift": {"gamma": 0.8}})
    assert partial.external_shift == ScannerProfile(**{**SHIFT, "gamma": 0.8})
    assert [partial.scanner(s).gamma for s in ("demo01", "demo02", "demo03", "demo04")] == [1.0, 1.0, 0.8, 0.8]
