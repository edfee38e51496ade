"""Audit of finished runs: verify a results folder against its manifest, diff two runs.

``verify`` re-hashes every file and lists changed, missing and extra files. ``diff`` compares two
results folders file by file: bit-identity first; where files differ, the size of the difference
(NIfTI: voxel-wise max |a-b| and Dice per label for masks; TSV: max |a-b| per numeric column;
PyTorch checkpoints: max |a-b| over weights; JSON: differing keys) and why it may not be
bit-identical (GPU kernels, different software, upstream differences). A verdict is given per stage
(``results/<stage>/``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.audit.manifest import EXCLUDED, hash_results, read_manifest
from medpipe.core.overlap import dice_score
from medpipe.core.sidecar import sidecar_path, write_json

logger = logging.getLogger(__name__)

#: Pipeline order of the stages; an unexplained difference is blamed on the earliest differing stage.
STAGE_ORDER = (
    "convert",
    "coregister",
    "n4",
    "skullstrip",
    "normalise",
    "split",
    "train",
    "predict",
    "postprocess",
    "evaluate",
    "radiomics",
    "stats",
    "audit",
)
#: Stages whose outputs depend on GPU kernels when a GPU was used.
GPU_STAGES = ("train", "predict")
#: Largest number of distinct integer values for an image to be treated as a label mask.
MAX_MASK_LABELS = 10
MANIFEST = "audit/manifest.json"
#: Table columns read as text (identifiers such as subject "01" are not numbers).
ID_COLUMNS = ("subject", "fold", "source", "sequence", "label")


@dataclass
class VerifyResult:
    """Outcome of :func:`verify`: files whose content changed, vanished or appeared."""

    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not (self.changed or self.missing or self.extra)


def results_root(path: str | Path) -> Path:
    """The results folder of ``path``: itself, or ``path/results`` when given a working directory."""
    p = Path(path)
    return p / "results" if not (p / MANIFEST).exists() and (p / "results" / MANIFEST).exists() else p


def verify(results_dir: str | Path, manifest: str | Path | None = None) -> VerifyResult:
    """Re-hash ``results_dir`` and compare with its manifest (default ``results_dir/audit/manifest.json``)."""
    root = results_root(results_dir)
    record = read_manifest(manifest if manifest is not None else root / MANIFEST)
    expected: Mapping[str, Mapping[str, Any]] = record["files"]
    actual = hash_results(root, tuple(record.get("excluded", EXCLUDED)))
    return VerifyResult(
        changed=sorted(p for p in expected if p in actual and actual[p]["sha256"] != expected[p]["sha256"]),
        missing=sorted(p for p in expected if p not in actual),
        extra=sorted(p for p in actual if p not in expected),
    )


# --- diff ----------------------------------------------------------------------------------------


@dataclass
class FileDiff:
    """Comparison of one file present in one or both runs."""

    path: str
    status: str  # identical | differs | only_a | only_b
    kind: str = "binary"
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _stage(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else "(top level)"


def _finite_max(values: Any) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmax(arr)) if arr.size and not np.all(np.isnan(arr)) else 0.0


def compare_nifti(a: Path, b: Path) -> dict[str, Any]:
    """Shape/affine agreement, voxel-wise max |a-b|, and Dice per label when both are label masks."""
    from medpipe.core.io import load_nifti

    ia, ib = load_nifti(a), load_nifti(b)
    out: dict[str, Any] = {
        "same_shape": ia.shape == ib.shape,
        "affine_max_abs_diff": float(np.abs(ia.affine - ib.affine).max()),
    }
    if ia.shape != ib.shape:
        return out
    da, db = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
    out["max_abs_diff"] = _finite_max(np.abs(da.astype(np.float64) - db.astype(np.float64)))
    out["voxels_differing"] = int(np.count_nonzero(da != db))
    if np.issubdtype(da.dtype, np.integer) and np.issubdtype(db.dtype, np.integer):
        labels = np.union1d(np.unique(da), np.unique(db))
        if len(labels) <= MAX_MASK_LABELS:
            dice = {}
            for lab in labels[labels != 0]:
                dice[str(int(lab))] = dice_score(da == lab, db == lab)
            out["dice"] = dice
    return out


def compare_table(a: Path, b: Path) -> dict[str, Any]:
    """Per numeric column max |a-b| (rows matched by position); non-numeric cells that differ."""
    ids = {c: str for c in ID_COLUMNS}
    ta = pd.read_csv(a, sep="\t" if a.suffix == ".tsv" else ",", dtype=ids)
    tb = pd.read_csv(b, sep="\t" if b.suffix == ".tsv" else ",", dtype=ids)
    out: dict[str, Any] = {"shape_a": list(ta.shape), "shape_b": list(tb.shape)}
    if ta.shape != tb.shape or list(ta.columns) != list(tb.columns):
        out["columns_only_a"] = sorted(set(ta.columns) - set(tb.columns))
        out["columns_only_b"] = sorted(set(tb.columns) - set(ta.columns))
        return out
    numeric: dict[str, float] = {}
    text: dict[str, int] = {}
    row_diff = np.zeros(len(ta))
    keys = [c for c in ta.columns if not pd.api.types.is_numeric_dtype(ta[c])]
    for col in ta.columns:
        ca, cb = ta[col], tb[col]
        if pd.api.types.is_numeric_dtype(ca) and pd.api.types.is_numeric_dtype(cb):
            diff = np.abs(ca.to_numpy(np.float64) - cb.to_numpy(np.float64))
            row_diff = np.fmax(row_diff, diff)
            nan_mismatch = int((ca.isna() != cb.isna()).sum())
            if nan_mismatch:
                text[str(col)] = nan_mismatch
            if _finite_max(diff) > 0:
                numeric[str(col)] = _finite_max(diff)
        else:
            n = int((ca.astype(str) != cb.astype(str)).sum())
            if n:
                text[str(col)] = n
    out["column_max_abs_diff"] = dict(sorted(numeric.items(), key=lambda kv: -kv[1]))
    out["max_abs_diff"] = max(numeric.values(), default=0.0)
    top = [int(i) for i in np.argsort(-row_diff)[:5] if row_diff[i] > 0]
    out["rows_largest_diff"] = {" ".join(str(ta.at[i, c]) for c in keys) or f"row {i}": float(row_diff[i]) for i in top}
    out["text_cells_differing"] = text
    return out


def compare_checkpoint(a: Path, b: Path) -> dict[str, Any]:
    """Max |a-b| over the tensors of two PyTorch checkpoints (loaded with ``weights_only``)."""
    import torch

    def tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(obj, torch.Tensor):
            return {prefix: obj}
        if isinstance(obj, Mapping):
            return {
                k: v
                for key, val in obj.items()
                for k, v in tensors(val, f"{prefix}.{key}" if prefix else str(key)).items()
            }
        return {}

    ta = tensors(torch.load(a, map_location="cpu", weights_only=True))
    tb = tensors(torch.load(b, map_location="cpu", weights_only=True))
    common = [k for k in ta if k in tb and ta[k].shape == tb[k].shape and ta[k].is_floating_point()]
    diffs = {k: float((ta[k].double() - tb[k].double()).abs().max()) for k in common if ta[k].numel()}
    return {
        "tensors_compared": len(diffs),
        "tensors_unmatched": len(set(ta) ^ set(tb)),
        "max_abs_diff": max(diffs.values(), default=0.0),
        "largest": dict(sorted(diffs.items(), key=lambda kv: -kv[1])[:5]),
    }


def _json_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b), key=str)
            for d in _json_diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def compare_json(a: Path, b: Path) -> dict[str, Any]:
    """Dotted keys whose values differ (the ``timing`` section of a manifest is ignored)."""
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    if a.name == Path(MANIFEST).name:
        ja.pop("timing", None)
        jb.pop("timing", None)
    keys = _json_diff(ja, jb)
    return {"keys_differing": keys[:50], "n_keys_differing": len(keys)}


def _compare(a: Path, b: Path) -> tuple[str, dict[str, Any]]:
    name = a.name
    if name.endswith((".nii.gz", ".nii")):
        return "image", compare_nifti(a, b)
    if name.endswith((".tsv", ".csv")):
        return "table", compare_table(a, b)
    if name.endswith((".pt", ".pth")):
        return "checkpoint", compare_checkpoint(a, b)
    if name.endswith(".json"):
        return "json", compare_json(a, b)
    return "binary", {}


def _used_gpu(root: Path, rel: str, manifest: Mapping[str, Any] | None) -> bool:
    """True when the file's sidecar names a CUDA device, or its stage ran with a GPU present."""
    sc = sidecar_path(root / rel)
    if sc.is_file() and sc != root / rel and '"cuda' in sc.read_text():
        return True
    return _stage(rel) in GPU_STAGES and bool(manifest and manifest.get("hardware", {}).get("gpu"))


def environment_differences(ma: Mapping[str, Any] | None, mb: Mapping[str, Any] | None) -> list[str]:
    """What differs between two runs' manifests apart from their files and timing."""
    if ma is None or mb is None:
        return ["a run has no manifest: software and configuration cannot be compared"]
    out: list[str] = []
    pa, pb = ma["software"]["packages"], mb["software"]["packages"]
    changed = [f"{p} {pa.get(p, '-')} -> {pb.get(p, '-')}" for p in sorted(set(pa) | set(pb)) if pa.get(p) != pb.get(p)]
    if changed:
        out.append("software differs: " + "; ".join(changed[:10]) + (" ..." if len(changed) > 10 else ""))
    if ma["software"]["git"] != mb["software"]["git"]:
        out.append(f"medpipe code differs: {ma['software']['git']} vs {mb['software']['git']}")
    for key, label in (
        ("config_sha256", "config"),
        ("subject_sheet_sha256", "subject sheet"),
        ("seeds", "seeds"),
        ("deterministic", "deterministic switches"),
    ):
        if ma["run"].get(key) != mb["run"].get(key):
            out.append(f"{label} differs: {ma['run'].get(key)} vs {mb['run'].get(key)}")
    if ma.get("inputs") != mb.get("inputs"):
        out.append("input data differ (subject-sheet file digests)")
    for det in (ma, mb):
        flags = det["run"]["deterministic"]
        if not flags.get("config") or flags.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS") != "1":
            out.append(f"a run was not in deterministic mode ({flags})")
            break
    if ma["hardware"]["cpu"] != mb["hardware"]["cpu"] or ma["hardware"]["gpu"] != mb["hardware"]["gpu"]:
        out.append("hardware differs (floating-point results may differ across CPU/GPU models)")
    return out


def _explain(fd: FileDiff, env: list[str], first_stage: str | None, gpu: bool) -> str:
    if env:
        return "runs differ in environment/configuration: " + env[0]
    if gpu:
        return "computed on GPU: cuDNN/cuBLAS kernels and atomics are not bit-reproducible; drift size above"
    if first_stage is not None and _stage(fd.path) != first_stage:
        return f"inherits differences from upstream stage '{first_stage}'"
    return "unexpected: deterministic mode should make this bit-identical; investigate this stage first"


def diff_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Compare two results folders; return files, per-stage verdicts and environment differences."""
    ra, rb = results_root(run_a), results_root(run_b)
    volatile = {e for e in EXCLUDED if e != MANIFEST}
    ha, hb = hash_results(ra, tuple(volatile)), hash_results(rb, tuple(volatile))
    ma = read_manifest(ra / MANIFEST) if (ra / MANIFEST).is_file() else None
    mb = read_manifest(rb / MANIFEST) if (rb / MANIFEST).is_file() else None
    files: list[FileDiff] = []
    for rel in sorted(set(ha) | set(hb)):
        if rel not in hb or rel not in ha:
            files.append(FileDiff(rel, "only_a" if rel in ha else "only_b"))
            continue
        kind, details = "binary", dict[str, Any]()
        if ha[rel]["sha256"] != hb[rel]["sha256"] or rel == MANIFEST:
            kind, details = _compare(ra / rel, rb / rel)
        same = ha[rel]["sha256"] == hb[rel]["sha256"] or (rel == MANIFEST and not details["n_keys_differing"])
        files.append(FileDiff(rel, "identical" if same else "differs", kind, details))
    env = environment_differences(ma, mb)
    bad = [f for f in files if f.status != "identical"]
    stages_bad = {_stage(f.path) for f in bad if _stage(f.path) != "audit"}
    first = next((s for s in STAGE_ORDER if s in stages_bad), min(stages_bad) if stages_bad else None)
    for f in bad:
        f.reason = (
            "file exists in one run only"
            if f.status.startswith("only")
            else _explain(f, env, first, _used_gpu(ra, f.path, ma) or _used_gpu(rb, f.path, mb))
        )
    return {
        "identical": not bad,
        "n_files": len(files),
        "n_differing": len(bad),
        "stages": stage_verdicts(files),
        "environment_differences": env,
        "differing": [asdict(f) for f in bad],
        "not_compared": sorted(volatile),
    }


def stage_verdicts(files: list[FileDiff]) -> dict[str, dict[str, Any]]:
    """Per stage: file counts, the largest numeric drift, the smallest Dice, and a one-line verdict."""
    out: dict[str, dict[str, Any]] = {}
    for stage in sorted({_stage(f.path) for f in files}):
        group = [f for f in files if _stage(f.path) == stage]
        bad = [f for f in group if f.status != "identical"]
        drift = max((float(f.details.get("max_abs_diff", 0.0)) for f in bad), default=0.0)
        dices = [d for f in bad for d in f.details.get("dice", {}).values()]
        if not bad:
            verdict = f"bit-identical ({len(group)} files)"
        else:
            verdict = f"{len(bad)}/{len(group)} files differ; max |diff| {drift:.3g}"
            verdict += f"; min Dice {min(dices):.4f}" if dices else ""
        out[stage] = {
            "files": len(group),
            "differing": len(bad),
            "max_abs_diff": drift,
            "min_dice": min(dices) if dices else None,
            "verdict": verdict,
        }
    return out


def diff_markdown(result: Mapping[str, Any]) -> str:
    """Human-readable summary of :func:`diff_runs`."""
    lines = [
        f"# medpipe audit diff: {'IDENTICAL' if result['identical'] else 'DIFFERENT'}",
        "",
        f"{result['n_files']} files compared, {result['n_differing']} differ "
        f"(not compared: {', '.join(result['not_compared'])}).",
        "",
        "| stage | verdict |",
        "|---|---|",
    ]
    lines += [f"| {s} | {v['verdict']} |" for s, v in result["stages"].items()]
    if result["environment_differences"]:
        lines += ["", "## Environment differences", *[f"- {d}" for d in result["environment_differences"]]]
    if result["differing"]:
        lines += ["", "## Differing files", "", "| file | status | drift | reason |", "|---|---|---|---|"]
        for f in result["differing"]:
            d = f["details"]
            drift = [f"max abs {d['max_abs_diff']:.3g}"] if "max_abs_diff" in d else []
            drift += [f"Dice {d['dice']}"] if d.get("dice") else []
            drift += [f"{d['n_keys_differing']} keys"] if "n_keys_differing" in d else []
            lines.append(f"| {f['path']} | {f['status']} | {'; '.join(drift) or '-'} | {f['reason']} |")
    return "\n".join(lines) + "\n"


# --- CLI handlers (called by medpipe.cli) --------------------------------------------------------


def cli_verify(results_dir: Path, manifest: Path | None) -> int:
    """``medpipe audit verify``: 0 when intact, 1 with the list of changed/missing/extra files."""
    result = verify(results_dir, manifest)
    if result.intact:
        sys.stdout.write(f"OK: every file under {results_dir} matches its manifest\n")
        return 0
    for label, paths in (("changed", result.changed), ("missing", result.missing), ("extra", result.extra)):
        for p in paths:
            sys.stdout.write(f"{label}: {p}\n")
    sys.stdout.write(
        f"FAILED: {len(result.changed)} changed, {len(result.missing)} missing, "
        f"{len(result.extra)} extra file(s) under {results_dir}\n"
    )
    return 1


def cli_diff(run_a: Path, run_b: Path, out: Path | None) -> int:
    """``medpipe audit diff``: markdown on stdout, JSON (``.json``) or markdown to ``out``; 0 if identical."""
    result = diff_runs(run_a, run_b)
    text = diff_markdown(result)
    sys.stdout.write(text)
    if out is not None:
        if Path(out).suffix == ".json":
            write_json(result, out)
        else:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text)
    return 0 if result["identical"] else 1


__all__ = [
    "FileDiff",
    "VerifyResult",
    "cli_diff",
    "cli_verify",
    "compare_checkpoint",
    "compare_json",
    "compare_nifti",
    "compare_table",
    "diff_markdown",
    "diff_runs",
    "environment_differences",
    "stage_verdicts",
    "verify",
]
