"""IBSI-2 phase-1 response maps: pyradiomics' filters, as medpipe calls them, against the consensus maps.

The per-test outcome (status, largest deviation) is printed in a terminal summary section at the end of the run.
An independent scipy implementation of each transcribed setting must reproduce its consensus map, so a result of
pyradiomics is never blamed on a wrong setting.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import pywt
import scipy.ndimage as ndi
import SimpleITK as sitk

from medpipe.core.errors import DataError
from medpipe.core.io import read_sitk
from medpipe.radiomics import ibsi2
from medpipe.radiomics.extract import load_params
from medpipe.radiomics.ibsi2 import (
    NOT_OFFERED,
    TESTS,
    Ibsi2Test,
    check_all,
    check_test,
    deviation,
    limitations,
    markdown_table,
    phantom_path,
    pyradiomics_response,
    reference_path,
    write_results,
)

REPO = Path(__file__).resolve().parents[2]
BY_ID = {t.test_id: t for t in TESTS}
SCIPY_MODE = {"constant": "constant", "nearest": "nearest", "periodic": "wrap", "mirror": "reflect"}


class _Summary:
    """pytest plugin printing the measured table at the end of the run (visible in any CI log)."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = records

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.section("IBSI-2 phase 1: pyradiomics filters as medpipe uses them")
        for rec in self.records.values():
            pct = rec["max_deviation_pct"]
            shown = "" if pct is None else f"max deviation {pct:.3g} % ({rec['n_out_of_tolerance']} voxels out)"
            terminalreporter.write_line(f"{rec['test_id']:7} {rec['status']:16} {shown:40} {rec['setting']}")
            if rec["status"] in ("fail", "not expressible"):
                terminalreporter.write_line(f"{'':24}why: {rec['reason']}")


@pytest.fixture(scope="module")
def mr_settings() -> dict[str, Any]:
    """The ``setting`` section of the MR default params file (what the pipeline passes to pyradiomics)."""
    return dict(load_params(REPO / "config" / "radiomics" / "mr.yaml")[0]["setting"])


@pytest.fixture(scope="module")
def records(shared_dir: Path, mr_settings: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    measured = {rec["test_id"]: rec for rec in check_all(shared_dir, mr_settings)}
    if not request.config.pluginmanager.has_plugin("medpipe-ibsi2-summary"):
        request.config.pluginmanager.register(_Summary(measured), "medpipe-ibsi2-summary")
    return measured


def _array(path: Path) -> npt.NDArray[np.float64]:
    return sitk.GetArrayFromImage(read_sitk(path)).astype(np.float64)


# --- independent implementation of the settings (scipy, MIRP's definitions) -----------------------


def _kernel(wavelet: str, band: str) -> npt.NDArray[np.float64]:
    w = pywt.Wavelet(wavelet)
    k = np.asarray(w.dec_lo if band == "L" else w.dec_hi, dtype=np.float64)
    return np.append(k, 0.0) if k.size % 2 == 0 else k  # even kernels: centred by a trailing zero


def _rotations(invariant: bool) -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """The 24 right-angle rotations as (axis permutation, flips); the identity alone when not invariant."""
    if not invariant:
        return [((0, 1, 2), (False, False, False))]
    out = []
    for perm in itertools.permutations(range(3)):
        parity = sum(perm[i] > perm[j] for i in range(3) for j in range(i + 1, 3)) % 2
        out += [(perm, flips) for flips in itertools.product((False, True), repeat=3) if sum(flips) % 2 == parity]
    return out


def _wavelet(a: npt.NDArray[np.float64], test: Ibsi2Test, *, dilate: bool = True) -> npt.NDArray[np.float64]:
    """Undecimated separable wavelet: pywt filters, a trous dilation per level, mean over the rotations."""
    mode, rotations = SCIPY_MODE[test.padding], _rotations(test.rotation_invariant)
    total = np.zeros(a.shape)
    for perm, flips in rotations:
        bands = [_kernel(str(test.wavelet), str(test.position)[p]) for p in perm]
        low = [_kernel(str(test.wavelet), "L")] * 3
        bands = [k[::-1] if f else k for k, f in zip(bands, flips, strict=True)]
        low = [k[::-1] if f else k for k, f in zip(low, flips, strict=True)]
        v = a
        for level in range(1, test.level + 1):
            for axis, k in zip((2, 1, 0), bands if level == test.level else low, strict=True):  # x, y, z
                v = ndi.convolve1d(v, k, axis=axis, mode=mode)
            if dilate:
                bands, low = ([np.insert(k, range(1, k.size), 0.0) for k in ks] for ks in (bands, low))
        total += v
    return total / len(rotations)


def _independent(a: npt.NDArray[np.float64], test: Ibsi2Test) -> npt.NDArray[np.float64]:
    mode = SCIPY_MODE[test.padding]
    if test.filter == "mean":
        m = int(test.support or 0)
        return ndi.uniform_filter(a, size=(1, m, m) if test.dims == 2 else m, mode=mode)
    if test.filter == "log":
        s = float(test.sigma_mm or 0) / test.spacing_mm
        if test.dims == 3:
            return ndi.gaussian_laplace(a, s, mode=mode, truncate=float(test.truncate or 0))
        in_plane = {"sigma": (0.0, s, s), "mode": mode, "truncate": float(test.truncate or 0)}  # each z slice
        return ndi.gaussian_filter(a, order=(0, 2, 0), **in_plane) + ndi.gaussian_filter(a, order=(0, 0, 2), **in_plane)
    return _wavelet(a, test)


# --- measured against recorded --------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("test", TESTS, ids=lambda t: f"{t.test_id}-{t.recorded.replace(' ', '_')}")
def test_recorded_status_is_measured(test: Ibsi2Test, records: dict[str, dict[str, Any]]) -> None:
    rec = records[test.test_id]
    assert rec["status"] == test.recorded, rec
    if rec["status"] == "pass":
        assert rec["n_out_of_tolerance"] == 0 and rec["max_deviation_pct"] <= 1.0
    elif rec["status"] == "fail":
        assert rec["n_out_of_tolerance"] > 0 and rec["max_deviation_pct"] > 1.0 and rec["reason"]
    else:
        assert rec["max_deviation_pct"] is None and rec["reason"]


@pytest.mark.shared
@pytest.mark.parametrize("test", [t for t in TESTS if t.recorded == "pass"], ids=lambda t: t.test_id)
def test_compliant_maps_are_within_one_percent_everywhere(
    test: Ibsi2Test, shared_dir: Path, mr_settings: dict[str, Any]
) -> None:
    path = phantom_path(shared_dir, test.phantom)
    mask = read_sitk(path.parent.parent / "mask" / "mask.nii.gz")
    response = pyradiomics_response(test, read_sitk(path), mask, mr_settings)
    ours = sitk.GetArrayFromImage(response).transpose(2, 1, 0)  # z, y, x -> NIfTI i, j, k
    ref = np.asarray(nib.load(reference_path(shared_dir, test.test_id)).dataobj, dtype=np.float64)
    assert ours.shape == ref.shape
    assert np.all(np.abs(ours - ref) <= 0.01 * (ref.max() - ref.min()))


@pytest.mark.shared
@pytest.mark.parametrize("test", TESTS, ids=lambda t: t.test_id)
def test_transcribed_settings_reproduce_the_consensus_map(test: Ibsi2Test, shared_dir: Path) -> None:
    """scipy with the table's settings (MIRP's definitions) matches every consensus map: the settings are right."""
    a = _array(phantom_path(shared_dir, test.phantom))
    pct, n_out = deviation(_independent(a, test), _array(reference_path(shared_dir, test.test_id)))
    assert n_out == 0 and pct < 0.05, pct


@pytest.mark.shared
@pytest.mark.parametrize("test_id, scale", [("2.A", 2.25), ("2.B", 6.25)])
def test_log_misses_by_its_scale_normalisation(test_id: str, scale: float, shared_dir: Path) -> None:
    """pyradiomics' LoG is (sigma / spacing)^2 times IBSI's; undone, it is what the notes say."""
    test = BY_ID[test_id]
    path = phantom_path(shared_dir, test.phantom)
    response = pyradiomics_response(test, read_sitk(path), read_sitk(path.parent.parent / "mask" / "mask.nii.gz"))
    ours, ref = sitk.GetArrayFromImage(response), _array(reference_path(shared_dir, test_id))
    assert (float(test.sigma_mm or 0) / test.spacing_mm) ** 2 == scale
    raw_pct, _ = deviation(ours, ref)
    pct, n_out = deviation(ours / scale, ref)
    assert f"{raw_pct:.3g} %" in test.note or test.recorded == "fail"
    assert f"{pct:.3g} %" in test.note, (pct, test.note)
    if test_id == "2.A":  # the only voxel out is the impulse itself
        assert n_out == 1 and np.argmax(np.abs(ours / scale - ref)) == np.argmax(_array(path))
    else:
        assert n_out == 0


@pytest.mark.shared
@pytest.mark.parametrize("test_id", ["7.A.1", "7.A.2"])
def test_level_two_without_a_trous_misses_by_the_noted_amount(test_id: str, shared_dir: Path) -> None:
    test = BY_ID[test_id]
    a = _array(phantom_path(shared_dir, test.phantom))
    pct, _ = deviation(_wavelet(a, test, dilate=False), _array(reference_path(shared_dir, test_id)))
    assert f"misses by {pct:.1f} %" in test.note


@pytest.mark.shared
def test_table_covers_every_reference_map(shared_dir: Path) -> None:
    folder = reference_path(shared_dir, "1.A.1").parent
    stems = {p.name.removesuffix("-ValidCRM.nii.gz") for p in folder.glob("*-ValidCRM.nii.gz")}
    listed = [t.file_stem for t in TESTS] + [i.lower().replace(".", "_") for i in NOT_OFFERED]
    assert sorted(listed) == sorted(stems) and len(set(listed)) == len(listed)


# --- the check itself -------------------------------------------------------------------------------


def test_deviation_catches_a_perturbed_map() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0.0, 10.0, (6, 7, 8))
    span = ref.max() - ref.min()
    assert deviation(ref + 0.009 * span, ref) == (pytest.approx(0.9), 0)
    bad = ref.copy()
    bad[2, 3, 4] += 0.02 * span
    assert deviation(bad, ref) == (pytest.approx(2.0), 1)
    bad[0, 0, 0] = np.nan
    assert deviation(bad, ref) == (np.inf, 2)
    with pytest.raises(DataError, match="shape"):
        deviation(ref[:, :, :4], ref)
    with pytest.raises(DataError, match=r"range 0\.0"):
        deviation(ref, np.zeros_like(ref))


@pytest.mark.shared
def test_check_fails_a_compliant_map_perturbed_by_two_percent(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test = BY_ID["6.A.1"]
    ref = read_sitk(reference_path(shared_dir, test.test_id))
    arr = sitk.GetArrayFromImage(ref).astype(np.float64)
    arr[10, 20, 30] += 0.02 * (arr.max() - arr.min())
    perturbed = sitk.GetImageFromArray(arr)
    perturbed.CopyInformation(ref)
    monkeypatch.setattr(ibsi2, "pyradiomics_response", lambda *args, **kwargs: perturbed)
    result = check_test(test, shared_dir)
    assert result.status == "fail" and result.n_out_of_tolerance == 1
    assert result.max_deviation_pct == pytest.approx(2.0, rel=1e-5)


def test_limitations_depend_on_the_phantom_border() -> None:
    log = BY_ID["2.A"]  # zero padding; pyradiomics' LoG replicates the border
    impulse = np.zeros((9, 9, 9))
    impulse[4, 4, 4] = 1.0
    assert limitations(log, impulse) == []
    assert "constant padding" in limitations(log, impulse + 1.0)[0]
    db2 = BY_ID["5.A.1"]  # zero padding; pyradiomics' SWT is periodic: same within the db2 reach of 3 voxels
    assert limitations(db2, impulse) == []
    edge = impulse.copy()
    edge[4, 4, 1] = 1.0
    assert "periodic" in limitations(db2, edge)[0]
    assert limitations(BY_ID["1.A.1"], impulse) == ["pyradiomics has no mean filter"]
    assert any("rotation invariance" in r for r in limitations(BY_ID["5.A.2"], impulse))


def test_pyradiomics_level_two_is_the_level_one_filter_twice() -> None:
    from radiomics import imageoperations

    a = np.random.default_rng(1).normal(size=(16, 16, 16))
    image = sitk.GetImageFromArray(a)
    mask = sitk.GetImageFromArray(np.ones(a.shape, np.uint8))
    mask.CopyInformation(image)
    level2 = {n: sitk.GetArrayFromImage(im) for im, n, _ in imageoperations.getWaveletImage(
        image, mask, wavelet="haar", start_level=1, level=1)}  # fmt: skip
    approx = pywt.swtn(a, "haar", level=1, axes=(2, 1, 0))[0]["aaa"]
    np.testing.assert_allclose(level2["wavelet-HHH"], pywt.swtn(approx, "haar", level=1, axes=(2, 1, 0))[0]["ddd"])
    swt = pywt.swtn(a, "haar", level=2, axes=(2, 1, 0))  # the stationary transform: [level 2, level 1]
    np.testing.assert_allclose(swt[1]["ddd"], pywt.swtn(a, "haar", level=1, axes=(2, 1, 0))[0]["ddd"])
    assert not np.allclose(level2["wavelet-HHH"], swt[0]["ddd"])


def test_unknown_filter_and_wrong_spacing_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'mean' filter"):
        pyradiomics_response(BY_ID["1.A.1"], sitk.Image(8, 8, 8, sitk.sitkFloat64), sitk.Image(8, 8, 8, sitk.sitkUInt8))
    with pytest.raises(DataError, match="refused the phantom mask: Label"):
        pyradiomics_response(BY_ID["2.A"], sitk.Image(8, 8, 8, sitk.sitkFloat64), sitk.Image(8, 8, 8, sitk.sitkUInt8))
    path = phantom_path(tmp_path, "impulse")
    path.parent.mkdir(parents=True)
    image = sitk.Image(8, 8, 8, sitk.sitkUInt8)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path))
    with pytest.raises(DataError, match=r"spacing \(1.0, 1.0, 1.0\) mm, test 2.A needs 2.0 mm") as err:
        check_test(BY_ID["2.A"], tmp_path)
    assert str(path) in str(err.value)


def test_result_writers(tmp_path: Path) -> None:
    recs = [
        {"test_id": "5.A.1", "setting": "db2", "status": "pass", "max_deviation_pct": 1e-6, "n_out_of_tolerance": 0,
         "n_voxels": 8, "reason": ""},
        {"test_id": "1.A.1", "setting": "mean", "status": "not expressible", "max_deviation_pct": None,
         "n_out_of_tolerance": None, "n_voxels": None, "reason": "pyradiomics has no mean filter"},
    ]  # fmt: skip
    table = pd.read_csv(write_results(recs, tmp_path / "ibsi2.tsv"), sep="\t")
    assert list(table["status"]) == ["pass", "not expressible"]
    assert table["max_deviation_pct"].isna().tolist() == [False, True]
    text = markdown_table(recs)
    assert "| 5.A.1 | db2 | pass, max deviation 1e-06 % (0 voxels out) |" in text
    assert "| 1.A.1 | mean | not expressible: pyradiomics has no mean filter |" in text
