"""Benchmark: IBSI-2 phases 1 and 2 and extraction time of pyradiomics (as medpipe runs it), MIRP and pictologics.

* Phase 1 (response maps of the IBSI-2 digital phantoms, 1 % of the reference range): the 3D LoG and separable
  wavelet tests of :data:`medpipe.radiomics.ibsi2.TESTS` (2.A, 2.B, 5.A.1-7.A.2), each library with the test's own
  padding, rotation invariance and level where it has them.
* Phase 2 (intensity statistics of the filtered CT phantom, consensus +/- tolerance): 1.A-3.B and 6.A-7.B with the
  settings of :mod:`medpipe.radiomics.ibsi2_phase2`.
* Extraction time per STS case (``MR_T1_image.nii.gz`` + ``MR_T1_mask.nii.gz``) at 1 and 2 mm: original image plus
  LoG sigma 2 and 4 mm plus the 8 coif1 level-1 wavelet sub-bands, features: morphology (original image), intensity
  statistics and histogram, GLCM, GLRLM, GLSZM, NGTDM, NGLDM; trilinear resampling, 32 fixed bins, one thread.

pyradiomics runs in this interpreter through medpipe (``compute_features``); MIRP and pictologics run in another
interpreter (``--bench-python``, a virtual environment outside the repository: they are not medpipe dependencies)
that this script starts with ``--worker``. Response maps come back as .npy files, features as JSON; every
comparison is made here, with medpipe's functions.

Usage (repository root; pictologics 0.9.0 needs Python >= 3.12):
    python3.12 -m venv /work/bench-ibsi2 && /work/bench-ibsi2/bin/pip install mirp==2.7.0 pictologics==0.9.0
    PYTHONPATH=src .venv/bin/python benchmarks/radiomics_ibsi2_libraries.py \
        --bench-python /work/bench-ibsi2/bin/python --cases 3 --out benchmarks/results/radiomics_ibsi2_libraries.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PHASE1 = ["2.A", "2.B", "5.A.1", "5.A.2", "6.A.1", "6.A.2", "7.A.1", "7.A.2"]
PHASE2 = ["1.A", "1.B", "3.A", "3.B", "6.A", "6.B", "7.A", "7.B"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
MIRP_PADDING = {"constant": "constant", "nearest": "nearest", "periodic": "wrap", "mirror": "reflect"}
PICTO_PADDING = {"constant": "zero", "nearest": "nearest", "periodic": "periodic", "mirror": "mirror"}
TAG_BY_CODE = {
    "Q4LE": "stat_mean", "ECT3": "stat_var", "KE2A": "stat_skew", "IPH6": "stat_kurt", "Y12H": "stat_median",
    "1GSF": "stat_min", "QG58": "stat_p10", "8DWT": "stat_p90", "84IY": "stat_max", "SALO": "stat_iqr",
    "2OJQ": "stat_range", "4FUA": "stat_mad", "1128": "stat_rmad", "N72L": "stat_medad", "7TET": "stat_cov",
    "9S40": "stat_qcod", "N8CA": "stat_energy", "5ZWQ": "stat_rms",
}  # fmt: skip
#: Phase-2 filter of each configuration: (kind, parameters); the letter says 2D (A) or 3D (B).
PHASE2_FILTERS: dict[str, dict[str, Any]] = {
    "1": {"kind": "none"},
    "3": {"kind": "log", "sigma": 1.5},
    "6": {"kind": "wavelet", "position": {"A": "LH", "B": "LLH"}, "level": 1},
    "7": {"kind": "wavelet", "position": {"A": "HH", "B": "HHH"}, "level": 2},
}


# --- worker side (runs in the other interpreter; imports neither medpipe nor pyradiomics) ------------


def _mirp_phase1(spec: dict[str, Any]) -> np.ndarray:
    import mirp

    kw: dict[str, Any] = {"boundary_condition": MIRP_PADDING[spec["padding"]]}
    if spec["filter"] == "log":
        kw.update(filter_kernels="laplacian_of_gaussian", laplacian_of_gaussian_sigma=spec["sigma_mm"])
        kw.update(laplacian_of_gaussian_kernel_truncate=spec["truncate"])
    else:
        kw.update(filter_kernels="separable_wavelet", separable_wavelet_families=spec["wavelet"])
        kw.update(separable_wavelet_set=spec["position"], separable_wavelet_decomposition_level=spec["level"])
        kw.update(separable_wavelet_rotation_invariance=spec["rotation_invariant"])
        kw.update(separable_wavelet_pooling_method="mean")
    images = mirp.extract_images(
        write_images=False, export_images=True, image=spec["image"], mask=spec["mask"], by_slice=False,
        anti_aliasing=False, no_approximation=True, base_feature_families="none", **kw,
    )  # fmt: skip
    return np.asarray(images[0][0][1]["image"], dtype=np.float64)


def _picto_phase1(spec: dict[str, Any]) -> np.ndarray:
    import SimpleITK as sitk
    from pictologics.filters.log import laplacian_of_gaussian
    from pictologics.filters.wavelets import wavelet_transform

    image = sitk.ReadImage(spec["image"])
    xyz = sitk.GetArrayFromImage(image).astype(np.float64).transpose(2, 1, 0)  # pictologics: (x, y, z)
    pad = PICTO_PADDING[spec["padding"]]
    if spec["filter"] == "log":
        out = laplacian_of_gaussian(xyz, spec["sigma_mm"], image.GetSpacing(), spec["truncate"], pad)
    else:
        out = wavelet_transform(
            xyz, spec["wavelet"], spec["level"], spec["position"], pad, spec["rotation_invariant"], "average"
        )
    return np.asarray(out, dtype=np.float64).transpose(2, 1, 0)


def _mirp_phase2(filter_id: str, image: str, mask: str) -> dict[str, float]:
    import mirp

    spec, by_slice = PHASE2_FILTERS[filter_id[0]], filter_id.endswith("A")
    kw: dict[str, Any] = {} if by_slice else {"new_spacing": 1.0, "spline_order": 3}
    if spec["kind"] == "log":
        kw.update(filter_kernels="laplacian_of_gaussian", laplacian_of_gaussian_sigma=spec["sigma"])
        kw.update(laplacian_of_gaussian_kernel_truncate=4.0)
    elif spec["kind"] == "wavelet":
        kw.update(filter_kernels="separable_wavelet", separable_wavelet_families="db3")
        kw.update(separable_wavelet_set=spec["position"][filter_id[-1]], separable_wavelet_rotation_invariance=True)
        kw.update(separable_wavelet_decomposition_level=spec["level"], separable_wavelet_pooling_method="mean")
    families = {"base_feature_families": "statistics" if spec["kind"] == "none" else "none"}
    data = mirp.extract_features(
        image=image, mask=mask, image_modality="CT", by_slice=by_slice, anti_aliasing=False, no_approximation=True,
        resegmentation_intensity_range=[-1000.0, 400.0], response_map_feature_families="statistics",
        boundary_condition="reflect", **families, **kw,
    )[0]  # fmt: skip
    out = {}
    for column in data.columns:
        tag = next((t for t in TAG_BY_CODE.values() if str(column).endswith(t)), None)
        if tag is not None:
            out[tag] = float(data[column].iloc[0])
    return out


def _picto_phase2(filter_id: str, image: str, mask: str) -> dict[str, float] | str:
    import pictologics as pl

    spec = PHASE2_FILTERS[filter_id[0]]
    if filter_id.endswith("A") and spec["kind"] != "none":
        return "not expressible: pictologics' filters are 3D only"
    steps: list[dict[str, Any]] = []
    if filter_id.endswith("B"):
        resample = {"new_spacing": [1, 1, 1], "interpolation": "cubic", "mask_interpolation": "linear"}
        steps.append({"step": "resample", "params": {**resample, "mask_threshold": 0.5, "round_intensities": True}})
    else:
        steps.append({"step": "round_intensities", "params": {}})
    steps.append({"step": "resegment", "params": {"range_min": -1000, "range_max": 400, "apply_to": "intensity"}})
    if spec["kind"] == "log":
        steps.append({"step": "filter", "params": {"type": "log", "sigma_mm": 1.5, "truncate": 4.0}})
    elif spec["kind"] == "wavelet":
        params = {"wavelet": "db3", "level": spec["level"], "decomposition": spec["position"]["B"]}
        steps.append({"step": "filter", "params": {"type": "wavelet", **params, "rotation_invariant": True}})
    steps.append({"step": "extract_features", "params": {"families": ["intensity"]}})
    pipeline = pl.RadiomicsPipeline()
    pipeline.add_config(filter_id, steps)
    series = pipeline.run(image, mask, config_names=[filter_id])[filter_id]
    return {TAG_BY_CODE[str(k).rsplit("_", 1)[-1]]: float(v) for k, v in series.items() if str(k)[-4:] in TAG_BY_CODE}


BANDS = ["LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH"]
TEXTURE = ["glcm", "glrlm", "glszm", "ngtdm", "ngldm"]


def _mirp_time(image: str, mask: str, spacing: float) -> int:
    import mirp

    families = ["statistics", "intensity_histogram", *TEXTURE]
    data = mirp.extract_features(
        image=image, mask=mask, by_slice=False, new_spacing=spacing, spline_order=1, anti_aliasing=False,
        base_feature_families=["morphology", *families], response_map_feature_families=families,
        base_discretisation_method="fixed_bin_number", base_discretisation_n_bins=32,
        response_map_discretisation_method="fixed_bin_number", response_map_discretisation_n_bins=32,
        filter_kernels=["laplacian_of_gaussian", "separable_wavelet"], laplacian_of_gaussian_sigma=[2.0, 4.0],
        separable_wavelet_families="coif1", separable_wavelet_set=[b.lower() for b in BANDS],
        separable_wavelet_decomposition_level=1, boundary_condition="reflect",
    )[0]  # fmt: skip
    return int(data.shape[1])


def _picto_time(image: str, mask: str, spacing: float) -> int:
    import pictologics as pl

    resample = {"step": "resample", "params": {"new_spacing": [spacing] * 3, "interpolation": "linear"}}
    discretise = {"step": "discretise", "params": {"method": "FBN", "n_bins": 32}}
    families = ["intensity", "histogram", "texture"]
    pipeline = pl.RadiomicsPipeline()
    pipeline.add_config("original", [resample, discretise, {"step": "extract_features", "params": {
        "families": ["morphology", *families]}}])  # fmt: skip
    filters = [{"type": "log", "sigma_mm": s} for s in (2.0, 4.0)]
    filters += [{"type": "wavelet", "wavelet": "coif1", "level": 1, "decomposition": b} for b in BANDS]
    for i, params in enumerate(filters):
        steps = [resample, {"step": "filter", "params": params}, discretise]
        pipeline.add_config(f"filtered_{i}", [*steps, {"step": "extract_features", "params": {"families": families}}])
    results = pipeline.run(image, mask)
    return int(sum(len(s) for s in results.values()))


def worker(library: str, task: str, spec_path: Path, out_dir: Path) -> None:
    """Run one task of MIRP or pictologics; results land in ``out_dir`` (maps .npy, the rest results.json)."""
    spec = json.loads(spec_path.read_text())
    results: dict[str, Any] = {"versions": {}}
    from importlib.metadata import version

    results["versions"] = {p: version(p) for p in ("mirp", "pictologics", "numpy", "scipy", "PyWavelets")}
    __import__(library)  # imported (pictologics: its JIT warm-up) before any timing starts
    for item in spec["items"]:
        key, start = item["key"], time.perf_counter()
        try:
            if task == "phase1":
                fn = _mirp_phase1 if library == "mirp" else _picto_phase1
                np.save(out_dir / f"{key}.npy", fn(item))
                value: Any = "map"
            elif task == "phase2":
                value = (_mirp_phase2 if library == "mirp" else _picto_phase2)(key, item["image"], item["mask"])
            else:
                value = (_mirp_time if library == "mirp" else _picto_time)(item["image"], item["mask"], item["spacing"])
        except Exception as exc:
            value = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        results[key] = {"value": value, "seconds": time.perf_counter() - start}
        print(f"{library} {task} {key}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))


# --- main side (this interpreter: medpipe, pyradiomics) -------------------------------------------


def run_worker(python: str, library: str, task: str, items: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """Start the worker for one library and task; its results.json (or the reason it failed)."""
    out = tmp / f"{library}_{task}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps({"items": items}))
    cmd = [python, str(Path(__file__).resolve()), "--worker", library, "--task", task, "--spec", str(out / "spec.json")]
    done = subprocess.run(
        [*cmd, "--out-dir", str(out)], env={**os.environ, **ONE_THREAD}, capture_output=True, text=True
    )
    if done.returncode != 0 or not (out / "results.json").exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{library} {task} worker exited {done.returncode}: {tail[0][:300]}"}
    results = json.loads((out / "results.json").read_text())
    results["dir"] = str(out)
    return results


def phase1_items(data_root: Path) -> list[dict[str, Any]]:
    from medpipe.radiomics import ibsi2

    by_id = {t.test_id: t for t in ibsi2.TESTS}
    items = []
    for test_id in PHASE1:
        t = by_id[test_id]
        image = ibsi2.phantom_path(data_root, t.phantom)
        items.append({
            "key": test_id, "image": str(image), "mask": str(image.parent.parent / "mask" / "mask.nii.gz"),
            "filter": t.filter, "sigma_mm": t.sigma_mm, "truncate": t.truncate, "wavelet": t.wavelet,
            "position": t.position, "level": t.level, "rotation_invariant": t.rotation_invariant, "padding": t.padding,
        })  # fmt: skip
    return items


def phase1_cell(results: dict[str, Any], test_id: str, data_root: Path) -> str:
    """``pass, max 1e-06 %`` / ``fail, max 12 % (40 voxels out)`` / the reason it did not run."""
    import SimpleITK as sitk

    from medpipe.core.io import read_sitk
    from medpipe.radiomics.ibsi2 import deviation, reference_path

    if "error" in results:
        return results["error"]
    rec = results[test_id]
    if rec["value"] != "map":
        return str(rec["value"])
    response = np.load(Path(results["dir"]) / f"{test_id}.npy")
    reference = sitk.GetArrayFromImage(read_sitk(reference_path(data_root, test_id)))
    pct, n_out = deviation(response, reference)
    return f"{'pass' if n_out == 0 else 'fail'}, max {pct:.3g} %" + (f" ({n_out} voxels out)" if n_out else "")


def phase2_cell(values: dict[str, Any] | str, filter_id: str, data_root: Path) -> str:
    """``k/18 within tolerance, worst <tag> <d> x tol`` for one library's features of one configuration."""
    from medpipe.radiomics.ibsi2_phase2 import compare, load_reference, reference_path

    if isinstance(values, str):
        return values
    table = compare(values, load_reference(reference_path(data_root)), filter_id)
    computed = table[table["value"].notna()]
    worst = computed.loc[computed["deviation"].idxmax()]
    return f"{int(table['within'].sum())}/18, worst {worst['feature_tag']} {worst['deviation']:.3g} x tol"


def pyradiomics_time(image: Path, mask: Path, spacing: float) -> tuple[float, int]:
    """Seconds and feature count of medpipe's extraction (mr.yaml filters, 32 bins, no normalisation)."""
    import dataclasses

    from medpipe.core.io import read_sitk
    from medpipe.radiomics.extract import compute_features, load_params

    params, ibsi = load_params(REPO / "config" / "radiomics" / "mr.yaml")
    setting = {k: v for k, v in params["setting"].items() if k not in ("binWidth", "normalize", "normalizeScale")}
    params = {**params, "setting": {**setting, "binCount": 32}}
    ibsi = dataclasses.replace(ibsi, spacing_mm=(spacing,) * 3, bin_start=None)
    start = time.perf_counter()
    raw, _ = compute_features(read_sitk(image), read_sitk(mask), params, ibsi)
    return time.perf_counter() - start, len(raw)


def _phase_tables(args: argparse.Namespace, tmp: Path, versions: dict[str, Any]) -> list[str]:
    from medpipe.radiomics import ibsi2, ibsi2_phase2
    from medpipe.radiomics.extract import load_params

    setting = dict(load_params(REPO / "config" / "radiomics" / "ct.yaml")[0]["setting"])
    ours1 = {r["test_id"]: r for r in ibsi2.check_all(args.shared, setting)}
    ours2 = {r["filter_id"]: r for r in ibsi2_phase2.check_all(args.shared, setting)}
    items1 = phase1_items(args.shared)
    image, mask = (str(p) for p in ibsi2_phase2.ct_phantom(args.shared))
    items2 = [{"key": f, "image": image, "mask": mask} for f in PHASE2]
    lines = ["## Phase 1: response maps (pass: every voxel within 1 % of the reference range)", ""]
    lines += ["| test | setting | pyradiomics (medpipe) | MIRP | pictologics |", "|---|---|---|---|---|"]
    res = {lib: run_worker(args.bench_python, lib, "phase1", items1, tmp) for lib in ("mirp", "pictologics")}
    versions.update(next((r["versions"] for r in res.values() if "versions" in r), {}))
    for test_id in PHASE1:
        rec = ours1[test_id]
        own = rec["status"] + ("" if rec["max_deviation_pct"] is None else f", max {rec['max_deviation_pct']:.3g} %")
        cells = [phase1_cell(res[lib], test_id, args.shared) for lib in ("mirp", "pictologics")]
        lines.append(f"| {test_id} | {rec['setting']} | {own} | {' | '.join(cells)} |")
    lines += ["", "## Phase 2: CT phantom, 18 intensity statistics (within consensus +/- tolerance)", ""]
    lines += ["| ID | setting | pyradiomics (medpipe) | MIRP | pictologics |", "|---|---|---|---|---|"]
    res = {lib: run_worker(args.bench_python, lib, "phase2", items2, tmp) for lib in ("mirp", "pictologics")}
    for filter_id in PHASE2:
        rec = ours2[filter_id]
        own = rec["status"] if rec["n_within"] is None else f"{rec['n_within']}/18, worst {rec['worst_feature']} "
        own += "" if rec["max_deviation"] is None else f"{rec['max_deviation']:.3g} x tol"
        cells = [
            res[lib]["error"]
            if "error" in res[lib]
            else phase2_cell(res[lib][filter_id]["value"], filter_id, args.shared)
            for lib in ("mirp", "pictologics")
        ]
        lines.append(f"| {filter_id} | {rec['setting']} | {own} | {' | '.join(cells)} |")
    return lines


def _timing_table(args: argparse.Namespace, tmp: Path) -> list[str]:
    cases = sorted((args.shared / "ibsi_sts" / "nifti").glob("STS_00*"))[: args.cases]
    lines = ["## Extraction time per STS case (MR T1, seconds; features in brackets)", ""]
    lines += ["| case | spacing | pyradiomics (medpipe) | MIRP | pictologics |", "|---|---|---|---|---|"]
    items = [
        {
            "key": f"{c.name}@{s:g}",
            "image": str(c / "MR_T1_image.nii.gz"),
            "mask": str(c / "MR_T1_mask.nii.gz"),
            "spacing": s,
        }
        for s in args.spacings
        for c in cases
    ]
    res = {lib: run_worker(args.bench_python, lib, "timing", items, tmp) for lib in ("mirp", "pictologics")}
    for item in items:
        seconds, n = pyradiomics_time(Path(item["image"]), Path(item["mask"]), item["spacing"])
        cells = [f"{seconds:.1f} ({n})"]
        for lib in ("mirp", "pictologics"):
            rec = res[lib].get(item["key"], {"value": res[lib].get("error", "not run")})
            value = rec["value"]
            cells.append(f"{rec['seconds']:.1f} ({value})" if isinstance(value, int) else str(value))
        case, spacing = item["key"].split("@")
        lines.append(f"| {case} | {spacing} mm | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["mirp", "pictologics"])
    parser.add_argument("--task", choices=["phase1", "phase2", "timing"])
    parser.add_argument("--spec", type=Path)
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--bench-python", default="/work/bench-ibsi2/bin/python")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("MEDPIPE_SHARED", SHARED.parent)) / "data")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "radiomics_ibsi2_libraries.md")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.task, args.spec, args.out_dir)
        return
    sys.path.insert(0, str(REPO / "src"))
    from medpipe.radiomics.extract import pyradiomics_version

    versions: dict[str, Any] = {}
    start, load = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        body = [*_phase_tables(args, Path(tmp), versions), "", *_timing_table(args, Path(tmp))]
    versions["pyradiomics (medpipe)"] = pyradiomics_version()
    head = [
        "# IBSI-2 phases 1 and 2 and extraction time: pyradiomics (as medpipe runs it), MIRP, pictologics",
        "",
        "Command (repository root): `" + " ".join(["PYTHONPATH=src", sys.executable, *sys.argv]) + "`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; one thread per library "
        f"({', '.join(f'{k}=1' for k in ONE_THREAD)}). Total run {time.perf_counter() - start:.0f} s; load average "
        f"(1 min) {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + body) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
