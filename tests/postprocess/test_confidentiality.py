"""The DICOM-SEG export applies the PS3.15 basic confidentiality profile (Retain UIDs Option), nested sequences too.

Identifiers are planted in every attribute of the profile's table that the source series can carry as text (every
string, date, time and UID VR; sequences get an item with coded text) and in private groups of the real STS_001
MR series; the exported Segmentation must hold none of them, except the UIDs the Retain UIDs Option keeps, and must
still read back with the source's study and series links.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from medpipe.core.confidentiality import PROFILE_TABLE
from medpipe.postprocess.export_dicom_seg import export_dicom_seg
from tests.postprocess.test_export_dicom_seg import readback_dice

pytestmark = pytest.mark.shared

_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"}
#: Attributes with enumerated values that highdicom checks in the source: planted with a valid value instead.
_ENUMERATED = {(0x0010, 0x0040): "O"}  # Patient's Sex


def _profile_tables() -> dict[str, list[tuple[int, ...]]]:
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    return dicom_anonymization_database_selector(PROFILE_TABLE)


def _token(n: int) -> str:
    return f"PHIX{n:04d}Q"  # fits SH/AE/CS (16 characters, upper case and digits)


def _plant_value(vr: str, n: int) -> object | None:
    """A greppable planted value for an attribute of ``vr`` (None: no greppable value for that VR)."""
    if vr in _TEXT_VRS:
        return _token(n)
    if vr == "DA":
        return f"1911{1 + n % 12:02d}{1 + n % 28:02d}"
    if vr == "TM":
        return f"11{n % 60:02d}{n % 60:02d}.1911"
    if vr == "DT":
        return f"1911{1 + n % 12:02d}{1 + n % 28:02d}111111.1911"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.10.1911.{n}"
    if vr == "SQ":
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = _token(n), "99PHI", _token(n) + "M"
        return [item]
    return None


def _plant(ds: Dataset, tags: list[tuple[int, ...]]) -> dict[tuple[int, int], str]:
    """Plant a value in every profile attribute of ``ds`` that has one; tag -> planted text (for grep)."""
    planted: dict[tuple[int, int], str] = {}
    for n, tag in enumerate(sorted({t for t in tags if len(t) == 2 and t[0] not in (0x0000, 0x0002)})):
        try:
            vr = dictionary_VR(tag).split(" ")[0]
        except KeyError:
            continue
        if tag in _ENUMERATED:
            ds.add_new(tag, vr, _ENUMERATED[tag])
            continue
        value = _plant_value(vr, n)
        if value is None:
            continue
        ds.add_new(tag, vr, value)
        planted[(tag[0], tag[1])] = _token(n) if vr == "SQ" else str(value)
    for group, creator in ((0x0009, "MEDPIPE PHI A"), (0x0029, "MEDPIPE PHI B")):
        block = ds.private_block(group, creator, create=True)
        block.add_new(0x10, "LO", f"PRIVPHI{group:04X}")
        planted[(group, 0x1010)] = f"PRIVPHI{group:04X}"
    return planted


@pytest.fixture(scope="module")
def planted_series(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Dataset]:
    """STS_001's MR series with identifiers planted in every profile attribute of every instance."""
    source = shared_dir / "ibsi_sts" / "dicom" / "STS_001" / "MR_T1" / "image"
    out = tmp_path_factory.mktemp("planted") / "image"
    shutil.copytree(source, out)
    tables = _profile_tables()
    first: Dataset | None = None
    planted: dict = {}
    for f in sorted(out.iterdir()):
        ds = pydicom.dcmread(f)
        links = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID)
        planted = _plant(ds, tables["ALL_TAGS"])
        # the series stays one series of one study: the UIDs that link instances keep the source's values
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID = links
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds.save_as(f)
        first = first or ds
    assert first is not None
    return out, planted, first


def test_no_planted_identifier_survives_in_the_segmentation(planted_series, shared_dir: Path, tmp_path: Path) -> None:
    series, planted, source = planted_series
    mask = shared_dir / "ibsi_sts" / "nifti" / "STS_001" / "MR_T1_mask.nii.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = export_dicom_seg(mask, [series], tmp_path / "seg.dcm", subject="001", label_name="lesion")
    retained = {tuple(t) for t in (*_profile_tables()["U_TAGS"], *_profile_tables()["X_Z_U_STAR_TAGS"])}
    raw = out.read_bytes()
    must_go = {tag: text for tag, text in planted.items() if tag not in retained}
    found = [f"({g:04X},{e:04X}) {text}" for (g, e), text in must_go.items() if text.encode() in raw]
    print(f"planted {len(planted)} attributes ({len(must_go)} outside the retained UIDs) in each of the source files")
    assert len(must_go) > 300
    assert not found, "planted identifiers in the DICOM-SEG:\n" + "\n".join(found[:30])
    seg = hd.seg.segread(out)
    assert seg.StudyInstanceUID == source.StudyInstanceUID  # Retain UIDs Option: the link to the study
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert str(seg.PatientName) == "001" and seg.PatientID == "001" and seg.PatientIdentityRemoved == "YES"
    assert seg.SeriesDescription == "medpipe lesion" and seg.PatientSex == ""
    assert [c.CodeValue for c in seg.DeidentificationMethodCodeSequence] == ["113100", "113110"]
    assert not any(el.tag.is_private for el in seg.iterall())
    dice, _ = readback_dice(out, nib.load(mask))
    assert dice >= 0.99


def test_a_device_serial_number_is_removed_from_every_nested_sequence(planted_series, shared_dir, tmp_path) -> None:
    """The source's equipment (Contributing Equipment Sequence of the SEG) loses its serial number and site."""
    series, planted, _ = planted_series
    mask = shared_dir / "ibsi_sts" / "nifti" / "STS_001" / "MR_T1_mask.nii.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = export_dicom_seg(mask, [series], tmp_path / "seg.dcm", subject="001", label_name="lesion")
        again = export_dicom_seg(mask, [series], tmp_path / "again.dcm", subject="001", label_name="lesion")
    seg = pydicom.dcmread(out)
    serials = [str(el.value) for el in seg.iterall() if el.keyword == "DeviceSerialNumber"]
    assert serials and planted[(0x0018, 0x1000)] not in serials  # highdicom copies the source's equipment
    assert out.read_bytes() == again.read_bytes()  # still byte-identical on a re-run


def test_no_planted_identifier_reaches_the_converted_image_or_its_sidecars(planted_series, tmp_path: Path) -> None:
    """The convert stage's outputs (NIfTI, sidecar, de-identification table, QC) of the planted series hold none."""
    import gzip

    from medpipe.convert.dicom import convert_sequence

    series, planted, _ = planted_series
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        convert_sequence(
            series, out / "sub-001_T1w.nii.gz", out / "deid.tsv", out / "qc.png", subject="001", sequence="T1w",
            selector={},
        )  # fmt: skip
    retained = {tuple(t) for t in (*_profile_tables()["U_TAGS"], *_profile_tables()["X_Z_U_STAR_TAGS"])}
    must_go = {tag: text for tag, text in planted.items() if tag not in retained}
    files = sorted(out.iterdir())
    assert {f.name for f in files} >= {"sub-001_T1w.nii.gz", "sub-001_T1w.json", "deid.tsv", "qc.png"}
    found = []
    for f in files:
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        found += [f"{f.name}: ({g:04X},{e:04X}) {text}" for (g, e), text in must_go.items() if text.encode() in data]
    assert not found, "planted identifiers in the converted outputs:\n" + "\n".join(found[:30])
