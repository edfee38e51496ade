"""IBSI-2 labels of the feature table: the filter behind each image type, and what IBSI-2 phases 1 and 2 say of it.

Three columns of the feature table (:data:`medpipe.radiomics.extract.COLUMNS`) come from here:

* ``ibsi2_code``: the IBSI-2 identifier of the filter family (:data:`FILTER_CODES`: ``L6PA`` Laplacian of Gaussian,
  ``25BO`` separable wavelets), beside the IBSI-1 feature code of the row; ``none`` where IBSI-2 defines no filter
  (the original image, pyradiomics' intensity transforms). The codes are the IBSI-2 reference manual's, as MIRP (by
  the IBSI's authors) names them in its feature-name documentation (``docs/features_names.rst``).

* ``ibsi2_filter``: the filter the image was computed with, in IBSI-2's terms, from the image type name and the
  params that ran (``imageType`` section, ``setting`` section, resampled voxel spacing): ``none`` for the original
  image, ``LoG sigma=2.0mm 3D, nearest``, ``wavelet coif1 HHL level 1 3D, periodic, not rotation invariant``;
  ``not an IBSI-2 filter (square)`` for pyradiomics' intensity transforms, gradient and local binary patterns.
* ``ibsi2_compliance``: ``n/a (no filter)`` for the original image (not a bare ``n/a``, which pandas reads as a
  missing value); ``compliant (5.A.1, 6.A.1)`` when every phase-1 test covering the configuration passes;
  ``non-compliant (<ids>: <reason>; ...)`` naming the tests that fail or that pyradiomics cannot express;
  ``not assessed`` where no phase-1 test covers the image type. Where a phase-2 configuration covers it
  (rule 5), the text names both: ``compliant (phase 1: 5.A.1, 6.A.1; phase 2: 6.B not expressible, ...)``.

Which tests cover a configuration is read from :data:`medpipe.radiomics.ibsi2.TESTS` and
:data:`medpipe.radiomics.ibsi2_phase2.CONFIGS` and their recorded results at call time (one source each; nothing
here restates a result). A test covers a pyradiomics filter when

1. it tests the same family (``log``, ``wavelet``) and dimensionality (pyradiomics' LoG is 3D only; a wavelet is 2D
   under ``force2D``);
2. for wavelets, the same decomposition level, all levels >= 2 together (what fails there, the missing a trous
   dilation, is the same at every level above 1): level = ``start_level`` + the level index of the image name
   (``wavelet-`` 1, ``wavelet2-`` 2, ...);
3. its rotation invariance is the configuration's (pyradiomics has none), unless no test of that family and level
   has it: IBSI tests level 2 only rotation invariant (7.A.x), and those tests then stand for the level;
4. its padding is pyradiomics' (:data:`medpipe.radiomics.ibsi2.PYRADIOMICS_PADDING`) or the test was run (recorded
   pass or fail: the paddings agree on that phantom), unless that leaves none (7.A.x again);
5. a phase-2 configuration (:data:`medpipe.radiomics.ibsi2_phase2.CONFIGS`, the CT-phantom features) covers a
   configuration of the same family and dimensionality, for wavelets of the same level (levels >= 2 together).
   One that was run and fails makes the configuration non-compliant; one that pyradiomics cannot express is named
   but does not change the phase-1 verdict: every phase-2 wavelet is rotation invariant, a filter pyradiomics
   (so medpipe) never computes, so it does not test medpipe's wavelets.

The filter position and the wavelet name do not restrict the tests: they check the filter bank, the axis order of
the sub-band letters, the undecimated transform and the border, which are the same for every position and wavelet
(6.A.1 uses coif1 HHL, the wavelet of ``mr.yaml`` and ``ct.yaml``). So pyradiomics' level-1 wavelets are covered by
5.A.1 and 6.A.1 (pass), levels >= 2 by 7.A.1 and 7.A.2 (not expressible), the LoG by 2.A (fail); in phase 2 the
LoG by 3.B (fails), the 3D wavelets by 6.B (level 1) and 7.B (not expressible).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from medpipe.radiomics import ibsi2, ibsi2_phase2
from medpipe.radiomics.ibsi2 import Ibsi2Test, Padding
from medpipe.radiomics.ibsi2_phase2 import Phase2Config

logger = logging.getLogger(__name__)

#: Settings ``getWaveletImage`` falls back to when a params file leaves them out (pyradiomics' own, not medpipe's).
PYRADIOMICS_WAVELET_SETTINGS: dict[str, Any] = {"wavelet": "coif1", "start_level": 0, "level": 1, "force2D": False}

#: pyradiomics image types IBSI-2 has no filter for (intensity transforms, gradient magnitude, local binary patterns).
NOT_IBSI2 = re.compile(r"^(square|squareroot|logarithm|exponential|gradient|lbp-2D|lbp-3D-(m\d+|k))$")

#: IBSI-2 names of the filter families (``Ibsi2Test.filter``).
FAMILY_NAMES = {"mean": "mean filter", "log": "LoG", "wavelet": "wavelet"}

#: IBSI-2 identifiers of the filter families (reference manual, chapter "Convolutional filters").
FILTER_CODES = {
    "mean": "S60F",
    "log": "L6PA",
    "laws": "JTXT",
    "gabor": "Q88H",
    "wavelet": "25BO",
    "nonseparable": "LODD",
}
#: ``ibsi2_code`` of a row whose image IBSI-2 defines no filter for.
NO_CODE = "none"

ORIGINAL_FILTER = "none"
ORIGINAL_COMPLIANCE = "n/a (no filter)"
NOT_ASSESSED = "not assessed"


@dataclass(frozen=True)
class FilterConfig:
    """A pyradiomics filter as it ran: the IBSI-2 settings of one image type."""

    family: Literal["log", "wavelet"]
    padding: Padding
    dims: Literal[2, 3] = 3
    sigma_mm: float | None = None  # LoG
    spacing_mm: tuple[float, ...] | None = None  # grid the LoG ran on (x, y, z); None: not known
    wavelet: str | None = None
    position: str | None = None  # filters along x, y, z, e.g. "HHL"
    level: int = 1  # IBSI decomposition level
    rotation_invariant: bool = False  # pyradiomics has no pooling over rotations

    def describe(self) -> str:
        """The filter in IBSI-2's terms, e.g. ``LoG sigma=2.0mm 3D, nearest``."""
        if self.family == "log":
            return f"LoG sigma={self.sigma_mm}mm {self.dims}D, {self.padding}"
        invariant = "rotation invariant" if self.rotation_invariant else "not rotation invariant"
        return f"wavelet {self.wavelet} {self.position} level {self.level} {self.dims}D, {self.padding}, {invariant}"


@dataclass(frozen=True)
class Ibsi2Label:
    """The IBSI-2 columns of a feature row."""

    filter: str
    compliance: str
    code: str = NO_CODE


def _custom(params: Mapping[str, Any], image_type: str) -> dict[str, Any] | None:
    """Settings of one ``imageType`` entry merged over the ``setting`` section (as pyradiomics merges them)."""
    types = params.get("imageType") or {}
    if image_type not in types:
        return None
    return {**(params.get("setting") or {}), **(types[image_type] or {})}


def _log_configs(params: Mapping[str, Any], spacing: tuple[float, ...] | None) -> dict[str, FilterConfig]:
    custom = _custom(params, "LoG")
    padding = ibsi2.PYRADIOMICS_PADDING["log"][0]
    configs = {}
    for sigma in (custom or {}).get("sigma", []):
        name = f"log-sigma-{str(sigma).replace('.', '-')}-mm-3D"  # getLoGImage's name
        configs[name] = FilterConfig("log", padding, sigma_mm=float(sigma), spacing_mm=spacing)
    return configs


def _wavelet_configs(params: Mapping[str, Any]) -> dict[str, FilterConfig]:
    custom = _custom(params, "Wavelet")
    if custom is None:
        return {}
    settings = {**PYRADIOMICS_WAVELET_SETTINGS, **custom}
    dims: Literal[2, 3] = 2 if settings["force2D"] else 3
    start, levels = int(settings["start_level"]), int(settings["level"])
    padding = ibsi2.PYRADIOMICS_PADDING["wavelet"][0]
    configs = {}
    for index in range(1, levels + 1):  # getWaveletImage's names: level index 1 unnumbered
        prefix = "wavelet-" if index == 1 else f"wavelet{index}-"
        bands = ["".join(p) for p in itertools.product("LH", repeat=dims)]
        if index < levels:  # the approximation is yielded for the last level only
            bands.remove("L" * dims)
        for band in bands:
            configs[prefix + band] = FilterConfig(
                "wavelet", padding, dims, wavelet=str(settings["wavelet"]), position=band, level=start + index
            )
    return configs


def filter_configs(params: Mapping[str, Any], spacing_mm: Sequence[float] | None = None) -> dict[str, FilterConfig]:
    """Every filtered image type a pyradiomics params dict yields, with its IBSI-2 settings.

    Parameters
    ----------
    params
        The pyradiomics part of a params file (``imageType``, ``setting``; :func:`~.extract.load_params`).
    spacing_mm
        Voxel spacing (x, y, z) of the image the filters run on (after resampling); None when not known.
    """
    spacing = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
    return {**_log_configs(params, spacing), **_wavelet_configs(params)}


def covering_tests(config: FilterConfig, tests: Iterable[Ibsi2Test] | None = None) -> list[Ibsi2Test]:
    """The phase-1 tests that cover ``config`` (rules 1-4 of the module docstring), from ``tests`` or ``TESTS``."""
    pool = list(ibsi2.TESTS if tests is None else tests)
    same = [t for t in pool if t.filter == config.family and t.dims == config.dims]
    if config.family == "wavelet":
        same = [t for t in same if t.level == config.level or min(t.level, config.level) >= 2]
    invariant = [t for t in same if t.rotation_invariant == config.rotation_invariant]
    same = invariant or same
    padded = [t for t in same if t.padding == config.padding or t.recorded in ("pass", "fail")]
    return padded or same


def _log_reason(config: FilterConfig) -> str:
    """Why pyradiomics' LoG fails 2.A, with the scale factor (sigma / spacing)^2 of this configuration."""
    kernel = "the recursive-Gaussian kernel approximation also fails the test"
    if config.spacing_mm is None or config.sigma_mm is None:
        return f"its sigma^2 scale normalisation makes the map (sigma/spacing)^2 times IBSI's, and {kernel}"
    factors = [(config.sigma_mm / s) ** 2 for s in config.spacing_mm]
    isotropic = all(math.isclose(s, config.spacing_mm[0]) for s in config.spacing_mm)
    spacing = f"{config.spacing_mm[0]:g}" if isotropic else "x".join(f"{s:g}" for s in config.spacing_mm)
    if all(math.isclose(f, 1.0) for f in factors):
        return (
            f"its sigma^2 scale normalisation (sigma/spacing)^2 is 1 here as sigma equals the {spacing} mm spacing, "
            f"but {kernel}"
        )
    if isotropic:
        return (
            f"its sigma^2 scale normalisation makes the map (sigma/spacing)^2 = {factors[0]:.3g} times IBSI's "
            f"at {spacing} mm spacing, and {kernel}"
        )
    shown = " / ".join(f"{f:.3g}" for f in factors)
    return (
        f"its sigma^2 scale normalisation weights the second derivatives by (sigma/spacing)^2 = {shown} along "
        f"x / y / z ({spacing} mm spacing), and {kernel}"
    )


def _reason(test: Ibsi2Test, config: FilterConfig) -> str:
    """Short reason why ``test`` does not pass for ``config`` (its recorded status is fail or not expressible).

    No semicolons: :func:`compliance` separates the reasons of several tests with them.
    """
    if test.recorded == "fail":
        return "fails, " + (_log_reason(config) if test.filter == "log" else "beyond 1 % of the reference map")
    lacking = []
    if test.level >= 2 and config.level >= 2:
        lacking.append(f"no a trous dilation at level {config.level} (pyradiomics repeats the level-1 filters)")
    if test.rotation_invariant and not config.rotation_invariant:
        lacking.append("no rotation invariance")
    if test.dims != config.dims:
        lacking.append(f"no {test.dims}D {FAMILY_NAMES[test.filter]}")
    if test.padding != config.padding:
        lacking.append(f"{test.padding} padding (pyradiomics pads {config.padding})")
    return f"{test.recorded}, {', '.join(lacking)}" if lacking else f"{test.recorded} with pyradiomics"


def covering_phase2(config: FilterConfig, phase2: Iterable[Phase2Config] | None = None) -> list[Phase2Config]:
    """The phase-2 configurations that cover ``config`` (rule 5 of the module docstring)."""
    pool = ibsi2_phase2.CONFIGS if phase2 is None else phase2
    same = [c for c in pool if c.family == config.family and c.dims == config.dims]
    if config.family == "wavelet":
        same = [c for c in same if c.level == config.level or min(c.level, config.level) >= 2]
    return same


def _phase2_text(config: Phase2Config) -> str:
    """One phase-2 result, without semicolons: ``3.B 3/18 within tolerance (...)`` or ``6.B not expressible (...)``."""
    if config.recorded_within is None:
        return f"{config.filter_id} {config.recorded}, {config.reason}"
    n = len(ibsi2_phase2.FEATURE_CODES)
    verb = "passes" if config.recorded == "pass" else "fails"
    text = f"{config.filter_id} {verb}, {config.recorded_within}/{n} features within tolerance"
    if config.recorded_corrected is not None:
        factor = ibsi2_phase2.log_factor(config)
        text += f" ({config.recorded_corrected}/{n} after dividing the map by its (sigma/spacing)^2 = {factor:g})"
    return text


def _phase1(config: FilterConfig, tests: Iterable[Ibsi2Test] | None) -> tuple[str, str]:
    """Phase-1 verdict (``compliant``, ``non-compliant``, ``not assessed``) and what it rests on."""
    covering = covering_tests(config, tests)
    if not covering:
        level = f" at level {config.level}" if config.family == "wavelet" else ""
        return NOT_ASSESSED, f"no IBSI-2 phase-1 test of a {config.dims}D {FAMILY_NAMES[config.family]}{level}"
    passed = [t.test_id for t in covering if t.recorded == "pass"]
    if len(passed) == len(covering):
        return "compliant", ", ".join(passed)
    by_reason: dict[str, list[str]] = {}
    for test in covering:
        if test.recorded != "pass":
            by_reason.setdefault(_reason(test, config), []).append(test.test_id)
    parts = [f"{', '.join(ids)}: {reason}" for reason, ids in by_reason.items()]
    if passed:
        parts.append(f"passes {', '.join(passed)}")
    return "non-compliant", "; ".join(parts)


def compliance(
    config: FilterConfig, tests: Iterable[Ibsi2Test] | None = None, phase2: Iterable[Phase2Config] | None = None
) -> str:
    """``compliant (...)``, ``non-compliant (...)`` or ``not assessed (...)`` for one filter configuration.

    Phase 1 (``tests``, :data:`medpipe.radiomics.ibsi2.TESTS` when None) gives the verdict; a covering phase-2
    configuration that was run and fails (``phase2``, :data:`medpipe.radiomics.ibsi2_phase2.CONFIGS` when None)
    makes it non-compliant. Both are named when phase 2 covers the configuration.
    """
    verdict, basis = _phase1(config, tests)
    covering = covering_phase2(config, phase2)
    if not covering:
        return f"{verdict} ({basis})"
    if verdict == "compliant" and any(c.recorded == "fail" for c in covering):
        verdict = "non-compliant"
    prefix = "" if verdict == NOT_ASSESSED else "phase 1: "
    return f"{verdict} ({prefix}{basis}; phase 2: {', '.join(_phase2_text(c) for c in covering)})"


def label(
    image_type: str,
    configs: Mapping[str, FilterConfig],
    tests: Iterable[Ibsi2Test] | None = None,
    phase2: Iterable[Phase2Config] | None = None,
) -> Ibsi2Label:
    """The IBSI-2 columns of the rows of one image type, given the :func:`filter_configs` of the params that ran."""
    if image_type == "original":
        return Ibsi2Label(ORIGINAL_FILTER, ORIGINAL_COMPLIANCE)
    if NOT_IBSI2.match(image_type):
        return Ibsi2Label(f"not an IBSI-2 filter ({image_type})", NOT_ASSESSED)
    config = configs.get(image_type)
    if config is None:
        logger.warning("image type %r is not one the params' imageType section yields; IBSI-2 not assessed", image_type)
        return Ibsi2Label(f"unknown image type ({image_type})", NOT_ASSESSED)
    return Ibsi2Label(config.describe(), compliance(config, tests, phase2), FILTER_CODES[config.family])


def labels(
    image_types: Iterable[str],
    params: Mapping[str, Any],
    spacing_mm: Sequence[float] | None = None,
    tests: Iterable[Ibsi2Test] | None = None,
    phase2: Iterable[Phase2Config] | None = None,
) -> dict[str, Ibsi2Label]:
    """IBSI-2 labels of ``image_types`` computed with ``params`` on a grid of ``spacing_mm`` (x, y, z).

    Parameters
    ----------
    image_types
        pyradiomics image type names (``original``, ``log-sigma-2-0-mm-3D``, ``wavelet-HHL``, ...).
    params
        The pyradiomics part of the params file that ran (``imageType``, ``setting``).
    spacing_mm
        Voxel spacing the filters ran on (the resampled grid); None when not known.
    tests
        Phase-1 tests with their recorded status; :data:`medpipe.radiomics.ibsi2.TESTS` when None.
    phase2
        Phase-2 configurations with their recorded results; :data:`medpipe.radiomics.ibsi2_phase2.CONFIGS` when None.

    Returns
    -------
    dict
        image type -> :class:`Ibsi2Label`.
    """
    configs = filter_configs(params, spacing_mm)
    pool = list(ibsi2.TESTS if tests is None else tests)
    pool2 = list(ibsi2_phase2.CONFIGS if phase2 is None else phase2)
    return {name: label(name, configs, pool, pool2) for name in sorted(set(image_types))}
