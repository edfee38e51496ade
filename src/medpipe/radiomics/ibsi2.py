"""IBSI-2 phase-1 compliance of the convolutional filters medpipe offers (pyradiomics' LoG and wavelets).

medpipe filters images only through pyradiomics' image types (``imageType`` of ``config/radiomics/*.yaml``).
This module runs every IBSI-2 phase-1 test whose filter family pyradiomics could express (1 mean, 2 LoG, 5-7
separable wavelets) through pyradiomics' own filter code, called as :mod:`medpipe.radiomics.ibsi_extractor`
calls it (``radiomics.imageoperations.get<Type>Image`` with the settings of a params file, on the float64 image
after the pre-crop), and compares the response map with the consensus map (``<test>-ValidCRM.nii.gz``) on the
reference map's grid: a map complies when every voxel is within 1 % of the reference map's range (max - min).

Settings of the tests (:data:`TESTS`), transcribed from
* MIRP (github.com/oncoray/mirp, ``test/ibsi_2_response_map_test.py`` at d8a6a72, v2.3.4): phantom, filter, mean
  support 15, LoG sigma 3 / 5 mm with truncation 4 sigma, wavelet family and filter position, decomposition
  level, rotation invariance with mean pooling, boundary condition and 2D (``by_slice``) or 3D of tests 1.A.1-8.A.3;
* pyCERR (github.com/cerr/pyCERR, ``tests/settingsForTests/IBSI2Phase1/IBSIPhase2-1ID2a.json``, ``...ID2b.json``,
  ``cerr/datasets/radiomics_settings/ibsi_settings/ibsi2_phase_1/ibsi_phase2_1_id_5a1.json``, ``..._6a1.json``):
  the same values (LoG cut-off 12 / 20 mm, padding zero / mirror / periodic, 6 / 10 voxels of padding at 2 mm);
* the phantom headers: 64^3 voxels of 2.0 mm (checked by :func:`check_test`).
The IBSI reference manual (arXiv 2006.05470, chapter "Convolutional filters") defines them. Padding names are
IBSI's: constant (zero), nearest, periodic, mirror (numpy ``symmetric``; MIRP and scipy call it ``reflect``).
Sub-band letters give the filter along x, y, z (MIRP: first letter -> ``filter_x``).

What pyradiomics does (``radiomics/imageoperations.py``, pyradiomics-bhklab 3.1.4):
* ``getLoGImage``: ``sitk.LaplacianRecursiveGaussianImageFilter`` with sigma in mm and
  ``SetNormalizeAcrossScale(True)``, i.e. the Laplacian in mm^-2 times sigma^2: (sigma / spacing)^2 times IBSI's
  LoG, whose kernel is defined on the voxel grid without normalisation. Recursive (IIR) Gaussian, no truncation;
  the border is replicated (``nearest``: measured against scipy on a ramp). 3D only: ``force2D`` is not used.
* ``getWaveletImage``: ``pywt.swtn(level=1)`` per level on the approximation of the level before, undecimated and
  periodic (the SWT is circular; an odd size first gets one wrapped slice appended, so the period is N + 1).
  Level n > 1 applies the level-1 filters again, without the a trous dilation of IBSI's level n. Sub-band names
  list x, y, z (``axes=(2, 1, 0)`` of the z, y, x array), IBSI's order: pyradiomics ``HHL`` matches 6.A.1.
* no mean, Laws, Gabor, Simoncelli or Riesz filter, and no rotation invariance (pooling over rotations).

A test whose padding pyradiomics does not have is still run when, on that phantom, the two paddings give the same
values within the filter's reach (:func:`limitations`; e.g. the impulse is zero at every border, so zero and
nearest padding are the same image): the filter then sees the input the test defines.

Results (pyradiomics-bhklab 3.1.4, PyWavelets 1.9.0, SimpleITK 2.5.7; table in docs/IBSI2.md): 5.A.1 and 6.A.1
pass (max 2e-6 %; coif1 level 1 is also what mr.yaml and ct.yaml use); 2.A fails (122 %, by the sigma^2 scale, see
its note); the other eleven are not expressible. Evidence that the settings are right, not pyradiomics wrong:
scipy with the same settings reproduces all fourteen consensus maps within 0.05 % (tests/radiomics/test_ibsi2.py:
``uniform_filter``; an FIR LoG cut off at 4 sigma, 2D = each z slice; pywt filters, even length centred by a
trailing zero, a trous dilation, mean over the 24 rotations).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import SimpleITK as sitk

from medpipe.core.errors import DataError
from medpipe.core.geometry import check_same_grid
from medpipe.core.io import read_sitk, sitk_geometry, write_tsv

logger = logging.getLogger(__name__)

Padding = Literal["constant", "nearest", "periodic", "mirror"]
Status = Literal["pass", "fail", "not expressible", "not offered"]

#: IBSI padding -> numpy.pad mode.
NUMPY_PAD: dict[str, str] = {"constant": "constant", "nearest": "edge", "periodic": "wrap", "mirror": "symmetric"}

#: Border handling of pyradiomics' filters (fixed; no setting changes it).
PYRADIOMICS_PADDING: dict[str, tuple[Padding, str]] = {
    "log": ("nearest", "ITK's recursive Gaussian replicates the border"),
    "wavelet": ("periodic", "pywt.swtn is circular"),
}

#: Relative tolerance of a response map: 1 % of the reference map's range.
TOLERANCE = 0.01


@dataclass(frozen=True)
class Ibsi2Test:
    """One IBSI-2 phase-1 response-map test and the result recorded for pyradiomics."""

    test_id: str  # IBSI id, e.g. "2.A"; the reference file is "<2_a>-ValidCRM.nii.gz"
    filter: Literal["mean", "log", "wavelet"]
    phantom: str
    padding: Padding
    recorded: Status  # what pyradiomics gives (checked by tests/radiomics/test_ibsi2.py)
    dims: Literal[2, 3] = 3  # 2: slice by slice
    support: int | None = None  # mean filter support M (voxels)
    sigma_mm: float | None = None  # LoG
    truncate: float | None = None  # LoG kernel cut-off, in sigma
    wavelet: str | None = None  # PyWavelets name
    position: str | None = None  # filters along x, y, z, e.g. "LHL"
    level: int = 1  # wavelet decomposition level
    rotation_invariant: bool = False  # mean pooling over the 24 right-angle rotations
    spacing_mm: float = 2.0
    note: str = ""  # why a test fails, or what pyradiomics would give regardless

    @property
    def file_stem(self) -> str:
        """``"1.A.1" -> "1_a_1"``, the reference map's file name prefix."""
        return self.test_id.lower().replace(".", "_")

    def describe(self) -> str:
        """The settings in one line."""
        if self.filter == "mean":
            what = f"mean, support {self.support} voxels"
        elif self.filter == "log":
            sigma = float(self.sigma_mm or 0.0)
            what = f"LoG, sigma {sigma:g} mm ({sigma / self.spacing_mm:g} voxels), cut-off {self.truncate:g} sigma"
        else:
            what = f"wavelet {self.wavelet} {self.position}, level {self.level}"
        invariant = ", rotation invariant (mean pooling)" if self.rotation_invariant else ""
        return f"{what}{invariant}, {self.dims}D, {self.padding} padding, {self.phantom}"


_SCALE = (
    "pyradiomics' LoG is scale-normalised (SetNormalizeAcrossScale(True)): (sigma / spacing)^2 = {f:g} times IBSI's"
)
_NOTE_2A = _SCALE.format(f=2.25) + (
    "; divided by 2.25 the map is within 1.37 % (one voxel out: the impulse centre, where the recursive Gaussian "
    "approximates poorly at 1.5 voxels)"
)
_NOTE_2B = (
    "run regardless with pyradiomics' nearest border: 267 % off; "
    + _SCALE.format(f=6.25)
    + ", divided by 6.25 within 0.855 %"
)
_LEVEL2 = (
    "also, pyradiomics' level 2 (start_level 1) is its level-1 filter on the level-1 approximation, without a "
    "trous dilation; the IBSI cascade without the dilation (rotation invariant, mirror padding) misses by {d} %"
)


def _log(test_id: str, phantom: str, padding: Padding, recorded: Status, sigma_mm: float, **kw: Any) -> Ibsi2Test:
    return Ibsi2Test(test_id, "log", phantom, padding, recorded, sigma_mm=sigma_mm, truncate=4.0, **kw)


def _wavelet(
    test_id: str, phantom: str, padding: Padding, recorded: Status, wavelet: str, position: str, **kw: Any
) -> Ibsi2Test:
    return Ibsi2Test(test_id, "wavelet", phantom, padding, recorded, wavelet=wavelet, position=position, **kw)


_NE: Status = "not expressible"
_PADDINGS: tuple[Padding, ...] = ("constant", "nearest", "periodic", "mirror")

#: The phase-1 tests of the families pyradiomics could express.
TESTS: tuple[Ibsi2Test, ...] = (
    *(Ibsi2Test(f"1.A.{i}", "mean", "checkerboard", pad, _NE, support=15) for i, pad in enumerate(_PADDINGS, start=1)),
    Ibsi2Test("1.B.1", "mean", "impulse", "constant", _NE, dims=2, support=15),
    _log("2.A", "impulse", "constant", "fail", 3.0, note=_NOTE_2A),
    _log("2.B", "checkerboard", "mirror", _NE, 5.0, note=_NOTE_2B),
    _log("2.C", "checkerboard", "mirror", _NE, 5.0, dims=2),
    _wavelet("5.A.1", "impulse", "constant", "pass", "db2", "LHL"),
    _wavelet("5.A.2", "impulse", "constant", _NE, "db2", "LHL", rotation_invariant=True),
    _wavelet("6.A.1", "sphere", "periodic", "pass", "coif1", "HHL"),
    _wavelet("6.A.2", "sphere", "periodic", _NE, "coif1", "HHL", rotation_invariant=True),
    _wavelet(
        "7.A.1",
        "checkerboard",
        "mirror",
        _NE,
        "haar",
        "LLL",
        level=2,
        rotation_invariant=True,
        note=_LEVEL2.format(d=28.9),
    ),
    _wavelet(
        "7.A.2",
        "checkerboard",
        "mirror",
        _NE,
        "haar",
        "HHH",
        level=2,
        rotation_invariant=True,
        note=_LEVEL2.format(d=43.8),
    ),
)

#: Phase-1 tests of filter families pyradiomics (so medpipe) does not offer: test id -> family.
NOT_OFFERED: dict[str, str] = {
    **{f"3.{s}.{i}": "Laws kernels" for s in "ABC" for i in (1, 2, 3)},
    **{f"4.{s}.{i}": "Gabor" for s in "AB" for i in (1, 2)},
    **{f"8.A.{i}": "Simoncelli (non-separable) wavelet" for i in (1, 2, 3)},
    "9.A": "Riesz-transformed filter",
    "9.B.1": "Riesz-transformed filter",
    "10.B.1": "Riesz-transformed Simoncelli wavelet",
}


@dataclass(frozen=True)
class Ibsi2Result:
    """Outcome of one test: status, largest deviation (% of the reference range), voxels out of tolerance."""

    test_id: str
    setting: str
    status: Status
    max_deviation_pct: float | None = None
    n_out_of_tolerance: int | None = None
    n_voxels: int | None = None
    reason: str = ""


def phantom_path(data_root: str | Path, phantom: str) -> Path:
    """NIfTI image of an IBSI-2 digital phantom under the shared ``data/`` folder."""
    return (
        Path(data_root) / "ibsi_phantoms" / "ibsi_2_digital_phantom" / "nifti" / phantom / "image" / f"{phantom}.nii.gz"
    )


def reference_path(data_root: str | Path, test_id: str) -> Path:
    """Consensus response map of a test (``reference_response_maps/<1_a_1>-ValidCRM.nii.gz``)."""
    stem = test_id.lower().replace(".", "_")
    return (
        Path(data_root) / "ibsi_phantoms" / "ibsi_2_reference" / "reference_response_maps" / f"{stem}-ValidCRM.nii.gz"
    )


def _reach(test: Ibsi2Test, shape: tuple[int, ...]) -> int:
    """Voxels beyond the border a filter of this test can see (the recursive LoG: the whole image)."""
    if test.filter == "wavelet" and test.wavelet is not None:
        import pywt

        return (len(pywt.Wavelet(test.wavelet).dec_lo) - 1) * 2 ** (test.level - 1)
    return max(shape)


def same_padding(array: npt.NDArray[Any], a: Padding, b: Padding, reach: int) -> bool:
    """Whether paddings ``a`` and ``b`` of ``array`` give the same values up to ``reach`` voxels out."""
    if a == b:
        return True
    padded_a = np.pad(array, reach, mode=NUMPY_PAD[a])  # type: ignore[call-overload]
    return bool(np.array_equal(padded_a, np.pad(array, reach, mode=NUMPY_PAD[b])))  # type: ignore[call-overload]


def limitations(test: Ibsi2Test, array: npt.NDArray[Any]) -> list[str]:
    """Settings of ``test`` that pyradiomics cannot express on this phantom (``array``); empty: it can."""
    reasons = []
    if test.filter == "mean":
        reasons.append("pyradiomics has no mean filter")
    if test.filter == "log" and test.dims == 2:
        reasons.append("2D LoG: pyradiomics' LoG is 3D only (getLoGImage ignores force2D)")
    if test.rotation_invariant:
        reasons.append("rotation invariance (mean pooling over rotations): pyradiomics has none")
    if test.filter in PYRADIOMICS_PADDING:
        border, how = PYRADIOMICS_PADDING[test.filter]
        if not same_padding(array, test.padding, border, _reach(test, array.shape)):
            reasons.append(
                f"{test.padding} padding: pyradiomics pads {border} ({how}); they differ on the {test.phantom}"
            )
    return reasons


def _image_type(test: Ibsi2Test) -> tuple[str, dict[str, Any], str]:
    """pyradiomics image type, its params-file settings and the name of the image it yields for ``test``."""
    if test.filter == "log" and test.sigma_mm is not None:
        sigma = float(test.sigma_mm)
        return "LoG", {"sigma": [sigma]}, f"log-sigma-{str(sigma).replace('.', '-')}-mm-3D"
    if test.filter == "wavelet" and test.position is not None:
        # level L alone: start_level L - 1, one level; pyradiomics names it without the level number
        custom = {"wavelet": test.wavelet, "start_level": test.level - 1, "level": 1}
        return "Wavelet", custom, f"wavelet-{test.position}"
    raise DataError(f"test {test.test_id}: pyradiomics has no {test.filter!r} filter")


def pyradiomics_response(
    test: Ibsi2Test, image: sitk.Image, mask: sitk.Image, settings: Mapping[str, Any] | None = None
) -> sitk.Image:
    """Response map of ``test`` from pyradiomics' own filter, called as medpipe's extraction calls it.

    Parameters
    ----------
    test
        The test (its LoG or wavelet settings become a params file's ``imageType`` entry).
    image, mask
        Phantom and its mask (IBSI-2 masks cover the volume, so the pre-crop keeps the grid).
    settings
        The params file's ``setting`` section (pyradiomics' defaults when None).

    Returns
    -------
    SimpleITK.Image
        The filtered image pyradiomics yields under the test's image type name, on the cropped grid.
    """
    from radiomics import imageoperations

    from medpipe.radiomics.ibsi_extractor import IbsiFeatureExtractor

    image_type, custom, wanted = _image_type(test)
    extractor = IbsiFeatureExtractor({"imageType": {image_type: custom}, "setting": dict(settings or {})})
    args = {**extractor.settings, **(extractor.enabledImagetypes[image_type] or {})}
    img = sitk.Cast(image, sitk.sitkFloat64)
    try:
        bbox, _ = imageoperations.checkMask(img, mask, **extractor.settings)
    except ValueError as exc:  # pyradiomics reports an invalid ROI as ValueError
        raise DataError(f"test {test.test_id}: pyradiomics refused the phantom mask: {exc}") from exc
    if extractor.settings.get("preCrop"):
        pad = int(extractor.settings.get("padDistance", 5))
        img, mask = imageoperations.cropToTumorMask(img, mask, bbox, padDistance=pad)
    for filtered, name, _ in getattr(imageoperations, f"get{image_type}Image")(img, mask, **args):
        if name == wanted:
            return filtered
    raise DataError(f"test {test.test_id}: pyradiomics yielded no image {wanted!r} (settings {custom})")


def deviation(
    response: npt.NDArray[Any], reference: npt.NDArray[Any], *, path: str | Path | None = None
) -> tuple[float, int]:
    """Largest absolute deviation in % of the reference range, and the number of voxels beyond 1 %.

    Non-finite response voxels count as out of tolerance (deviation infinite).
    """
    if response.shape != reference.shape:
        raise DataError(f"response shape {response.shape} differs from the reference {reference.shape}", path=path)
    ref = np.asarray(reference, dtype=np.float64)
    span = float(ref.max() - ref.min())
    if not np.isfinite(span) or span <= 0:
        raise DataError(f"reference map range {span} is not positive and finite", path=path)
    diff = np.abs(np.asarray(response, dtype=np.float64) - ref)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    return float(100.0 * diff.max() / span), int((diff > TOLERANCE * span).sum())


def _read_phantom(test: Ibsi2Test, data_root: str | Path) -> tuple[sitk.Image, sitk.Image]:
    path = phantom_path(data_root, test.phantom)
    image = read_sitk(path)
    spacing = tuple(float(s) for s in image.GetSpacing())
    if not np.allclose(spacing, test.spacing_mm):
        raise DataError(
            f"phantom voxel spacing {spacing} mm, test {test.test_id} needs {test.spacing_mm} mm", path=path
        )
    return image, read_sitk(path.parent.parent / "mask" / "mask.nii.gz")


def check_test(test: Ibsi2Test, data_root: str | Path, settings: Mapping[str, Any] | None = None) -> Ibsi2Result:
    """Run one test through pyradiomics and compare it with its consensus response map.

    Parameters
    ----------
    test
        The test.
    data_root
        The shared ``data/`` folder (holding ``ibsi_phantoms/``).
    settings
        The params file's ``setting`` section passed to pyradiomics (its defaults when None).

    Returns
    -------
    Ibsi2Result
        ``pass`` / ``fail`` with the deviation, or ``not expressible`` with the reasons.
    """
    image, mask = _read_phantom(test, data_root)
    reasons = limitations(test, sitk.GetArrayViewFromImage(image))
    if reasons:
        logger.info("IBSI-2 %s: not expressible with pyradiomics (%s)", test.test_id, "; ".join(reasons))
        note = f" (note: {test.note})" if test.note else ""
        return Ibsi2Result(test.test_id, test.describe(), "not expressible", reason="; ".join(reasons) + note)
    ref_path = reference_path(data_root, test.test_id)
    reference = read_sitk(ref_path)
    response = pyradiomics_response(test, image, mask, settings)
    check_same_grid(
        sitk_geometry(reference), sitk_geometry(response), what="pyradiomics vs reference map", path=ref_path
    )
    pct, n_out = deviation(sitk.GetArrayViewFromImage(response), sitk.GetArrayViewFromImage(reference), path=ref_path)
    status: Status = "pass" if n_out == 0 else "fail"
    logger.info("IBSI-2 %s: %s, max deviation %.3g %% (%d voxels out)", test.test_id, status, pct, n_out)
    return Ibsi2Result(
        test.test_id, test.describe(), status, pct, n_out, int(np.prod(image.GetSize())), test.note if n_out else ""
    )


def check_all(data_root: str | Path, settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Records (one dict per test, :class:`Ibsi2Result` fields) of every phase-1 test, those not offered included."""
    records = [asdict(check_test(test, data_root, settings)) for test in TESTS]
    for test_id, family in NOT_OFFERED.items():
        reason = "pyradiomics (so medpipe) offers no filter of this family"
        records.append(asdict(Ibsi2Result(test_id, family, "not offered", reason=reason)))
    return records


def write_results(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the records of :func:`check_all` as a TSV table."""
    return write_tsv(pd.DataFrame.from_records(list(records), columns=list(Ibsi2Result.__dataclass_fields__)), path)


def markdown_table(records: Iterable[Mapping[str, Any]]) -> str:
    """The records as a markdown table: test, setting, pyradiomics result (deviation or reason)."""
    lines = ["| test | filter and setting | pyradiomics |", "|---|---|---|"]
    for rec in records:
        result = str(rec["status"])
        if rec.get("max_deviation_pct") is not None:
            result += f", max deviation {rec['max_deviation_pct']:.3g} % ({rec['n_out_of_tolerance']} voxels out)"
        if rec.get("reason"):
            result += f": {rec['reason']}"
        lines.append(f"| {rec['test_id']} | {rec['setting']} | {result} |")
    return "\n".join(lines) + "\n"
