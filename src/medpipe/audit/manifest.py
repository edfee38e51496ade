"""Run manifest: what produced every file of a run, for a reproducibility audit.

The manifest (``results/audit/manifest.json``) is written by the last rule of the workflow. It holds

* ``files``: the sha256 and size of every file under ``results/`` (except :data:`EXCLUDED`),
* ``software``: medpipe version, git commit and dirty flag, and the version of every installed Python distribution,
* ``run``: config and subject-sheet hashes, subject IDs (from the sheet), every seed of the config,
  the deterministic switches (config and environment),
* ``inputs``: per subject and sheet column, a content digest of the input file or folder (no path:
  folder names of hospital exports can hold patient names),
* ``hardware``: OS, Python, CPU model, GPU model, driver, CUDA and cuDNN versions (software and hardware
  facts from :mod:`medpipe.audit.environment`),
* ``timing``: per-job wall time, start and end from Snakemake benchmark files. Timing differs between
  runs by nature; :mod:`medpipe.audit.verify` ignores it.

Everything except ``timing`` is a function of the run's inputs, code and environment, so two
identical runs write manifests that differ only in ``timing``. No DICOM tag value is ever read here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

import medpipe
from medpipe.audit.environment import all_package_versions, git_state, hardware_info, package_version
from medpipe.core.errors import DataError
from medpipe.core.io import atomic_path
from medpipe.core.sidecar import sha256_file, write_json

logger = logging.getLogger(__name__)

#: Format version of the manifest (bump on incompatible changes).
MANIFEST_VERSION = 1
#: Paths (relative to the results folder) never hashed: the manifest, its summary (both written
#: after hashing) and the Snakemake report (made after the run, it embeds its creation date).
EXCLUDED = ("audit/manifest.json", "audit/manifest_summary.html", "report.html")
#: Environment variables that decide whether a run is bit-reproducible.
DETERMINISM_ENV = (
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "OMP_NUM_THREADS",
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
)
#: Tools named in the report's methods text (their versions are shown in the manifest summary).
KEY_PACKAGES = (
    "snakemake",
    "numpy",
    "nibabel",
    "SimpleITK",
    "antspyx",
    "dcm2niix",
    "deepbet",
    "torch",
    "monai",
    "connected-components-3d",
    "pyradiomics-bhklab",
    "pingouin",
    "pydicom",
    "highdicom",
)


def hash_results(results_dir: str | Path, exclude: tuple[str, ...] = EXCLUDED) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``results_dir``, keyed by POSIX path relative to it.

    Hidden temporary files of interrupted atomic writes (``.name.XXXX``) are hashed too: an
    auditor must see them.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError("results folder does not exist", path=root)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in exclude:
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (sorted keys, no whitespace)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_seeds(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every config value whose key mentions ``seed``, keyed by its dotted path."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(find_seeds(value, dotted + "."))
        elif "seed" in str(key).lower():
            out[dotted] = value
    return out


#: Subject-sheet columns that name input files or folders.
PATH_COLUMNS = ("dicom", "label")


def input_digests(sheet: pd.DataFrame, base: Path) -> dict[str, dict[str, Any]]:
    """Content digest of each subject's input files/folders named in the subject sheet.

    The digest is the sha256 of the sorted (relative path, file sha256) list, so renaming the
    parent folder does not change it; only the subject ID and sheet column are recorded. Only the
    columns that name files (:data:`PATH_COLUMNS`) are read; ``set`` and ``site`` are recorded as they are.
    """
    out: dict[str, dict[str, Any]] = {}
    for _, row in sheet.iterrows():
        subject = str(row["subject"])
        entry: dict[str, Any] = {c: str(row[c]) for c in ("set", "site") if row.get(c)}
        for column, value in row.items():
            if column not in PATH_COLUMNS or not isinstance(value, str) or not value:
                continue
            path = Path(value) if Path(value).is_absolute() else base / value
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            files = [p for p in files if p.is_file()]
            if not files:
                entry[str(column)] = {"sha256": None, "files": 0}
                continue
            items = [[p.relative_to(path).as_posix() if path.is_dir() else "", sha256_file(p)] for p in files]
            entry[str(column)] = {"sha256": canonical_hash(items), "files": len(files)}
        out[subject] = entry
    return out


def read_sheet(path: str | Path) -> pd.DataFrame:
    """The subject sheet as strings (TSV, ``subject`` column required)."""
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    if "subject" not in sheet.columns:
        raise DataError(f"subject sheet has no 'subject' column (columns: {list(sheet.columns)})", path=path)
    return sheet


def benchmark_timing(benchmarks_dir: str | Path | None) -> dict[str, dict[str, Any]]:
    """Per-job wall time, peak RSS, CPU time, start and end (UTC) from Snakemake benchmark TSVs.

    Snakemake writes a benchmark file when the job ends, so the file's modification time is taken
    as the end and ``end - s`` as the start.
    """
    root = Path(benchmarks_dir) if benchmarks_dir is not None else None
    if root is None or not root.is_dir():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.tsv")):
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
        except (OSError, csv.Error) as exc:
            logger.warning("skipping unreadable benchmark file %s: %s", path, exc)
            continue
        if not rows or "s" not in rows[-1]:
            continue
        last = rows[-1]
        wall = float(last["s"])
        end = path.stat().st_mtime
        out[path.relative_to(root).as_posix()] = {
            "wall_s": wall,
            "max_rss_mb": _number(last.get("max_rss")),
            "cpu_time_s": _number(last.get("cpu_time")),
            "start": datetime.fromtimestamp(end - wall, UTC).isoformat(timespec="seconds"),
            "end": datetime.fromtimestamp(end, UTC).isoformat(timespec="seconds"),
        }
    return out


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "NA", "-") else None
    except ValueError:
        return None


def build_manifest(
    results_dir: str | Path,
    *,
    config: Mapping[str, Any],
    subjects_sheet: str | Path,
    benchmarks_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Assemble the manifest record of a run (see the module docstring for its sections)."""
    sheet = read_sheet(subjects_sheet)
    deterministic = {"config": config.get("deterministic")}
    deterministic.update({var: os.environ.get(var) for var in DETERMINISM_ENV})
    return {
        "manifest_version": MANIFEST_VERSION,
        "excluded": list(EXCLUDED),
        "files": hash_results(results_dir),
        "software": {"medpipe": medpipe.__version__, "git": git_state(), "packages": all_package_versions()},
        "run": {
            "config_sha256": canonical_hash(dict(config)),
            "subject_sheet_sha256": sha256_file(subjects_sheet),
            "subjects": sorted(str(s) for s in sheet["subject"]),
            "seeds": find_seeds(config),
            "deterministic": deterministic,
        },
        "inputs": input_digests(sheet, Path.cwd()),
        "hardware": hardware_info(),
        "timing": benchmark_timing(benchmarks_dir),
    }


def write_manifest(
    results_dir: str | Path,
    out: str | Path,
    *,
    config: Mapping[str, Any],
    subjects_sheet: str | Path,
    benchmarks_dir: str | Path | None = None,
    summary: str | Path | None = None,
    methods: str | Path | None = None,
) -> Path:
    """Hash the run in ``results_dir`` and write its manifest to ``out`` (and an HTML summary).

    Parameters
    ----------
    results_dir
        The run's ``results/`` folder.
    out
        Manifest path, normally ``results/audit/manifest.json``.
    config
        The workflow config (hashed; seeds and deterministic switches recorded).
    subjects_sheet
        The subject sheet TSV (hashed; subject IDs recorded).
    benchmarks_dir
        Snakemake benchmark folder; its files give the ``timing`` section.
    summary
        Where to write the one-page HTML summary shown in the report (optional).
    methods
        Where to write the software-versions paragraph (reStructuredText) that the report's front
        page includes (optional).
    """
    if methods is not None:  # written first, so that the manifest hashes it too
        write_versions_rst(methods)
    record = build_manifest(results_dir, config=config, subjects_sheet=subjects_sheet, benchmarks_dir=benchmarks_dir)
    path = write_json(record, out)
    logger.info(
        "manifest: %d files hashed, %d packages recorded -> %s",
        len(record["files"]),
        len(record["software"]["packages"]),
        path,
    )
    if summary is not None:
        write_summary_html(record, summary)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Load a manifest, raising :class:`DataError` naming the file when it is absent or invalid."""
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read run manifest: {exc}", path=path) from exc
    if "files" not in data:
        raise DataError("not a medpipe run manifest (no 'files' section)", path=path)
    return data


def summary_tables(record: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The manifest summary as small tables: run facts, files per stage, key tool versions."""
    software, run, hw = record["software"], record["run"], record["hardware"]
    gpu = hw.get("gpu")
    facts = {
        "medpipe version": software["medpipe"],
        "git commit": software["git"]["commit"],
        "uncommitted changes": software["git"]["dirty"],
        "config sha256": run["config_sha256"],
        "subject sheet sha256": run["subject_sheet_sha256"],
        "subjects": len(run["subjects"]),
        "seeds": ", ".join(f"{k}={v}" for k, v in run["seeds"].items()),
        "deterministic": ", ".join(f"{k}={v}" for k, v in run["deterministic"].items()),
        "OS": hw["os"],
        "Python": hw["python"],
        "CPU": f"{hw['cpu']} ({hw['cpu_count']} cores)",
        "GPU": "none"
        if not gpu
        else f"{', '.join(gpu['devices'])}; driver {gpu['driver']}; CUDA {gpu['cuda']}; cuDNN {gpu['cudnn']}",
        "files hashed": len(record["files"]),
        "packages recorded": len(software["packages"]),
    }
    stages: dict[str, list[int]] = {}
    for rel, entry in record["files"].items():
        stage = rel.split("/", 1)[0] if "/" in rel else "(top level)"
        stages.setdefault(stage, [0, 0])
        stages[stage][0] += 1
        stages[stage][1] += int(entry["bytes"])
    packages = software["packages"]
    return {
        "Run": pd.DataFrame({"item": list(facts), "value": [str(v) for v in facts.values()]}),
        "Files per stage": pd.DataFrame(
            [{"stage": s, "files": n, "MB": round(b / 1e6, 3)} for s, (n, b) in sorted(stages.items())]
        ),
        "Key software versions": pd.DataFrame(
            [{"package": p, "version": package_version(packages, p) or "not installed"} for p in KEY_PACKAGES]
        ),
    }


def write_html_tables(tables: Mapping[str, pd.DataFrame], out: str | Path, *, title: str, intro: str = "") -> Path:
    """Write a self-contained HTML page with one table per entry (escaped, no external assets)."""
    from html import escape

    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:13px}</style>",
        "</head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if intro:
        parts.append(f"<p>{escape(intro)}</p>")
    for name, table in tables.items():
        parts.append(f"<h2>{escape(name)}</h2>")
        parts.append(table.to_html(index=False, escape=True, border=0) if len(table) else "<p>none</p>")
    parts.append("</body></html>\n")
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts))
    return out


def write_summary_html(record: Mapping[str, Any], out: str | Path) -> Path:
    """One-page HTML summary of a manifest record, for the Snakemake report."""
    intro = (
        "Check that nothing changed since this run with `medpipe audit verify results`; compare a "
        "re-run with `medpipe audit diff RUN_A/results RUN_B/results`. "
        "Full record: results/audit/manifest.json."
    )
    return write_html_tables(summary_tables(record), out, title="Run manifest", intro=intro)


def write_versions_rst(out: str | Path) -> Path:
    """reStructuredText paragraph naming medpipe's commit and the versions of the key tools.

    ``report/workflow.rst`` includes it, so the methods text cites the versions that really ran.
    """
    packages = all_package_versions()
    git = git_state()
    hw = hardware_info()
    gpu = hw["gpu"]
    tools = ", ".join(f"{p} {v}" for p in KEY_PACKAGES if (v := package_version(packages, p)))
    device = ", no GPU"
    if gpu:
        device = f", GPU {', '.join(gpu['devices'])} (CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']})"
    text = (
        f"**Software.** medpipe {medpipe.__version__} (git commit ``{git['commit']}``, uncommitted changes: "
        f"{git['dirty']}) on {hw['os']}, Python {hw['python']}, CPU {hw['cpu']}"
        + f"{device}. Tool versions: {tools}. All {len(packages)} installed Python packages and their "
        "versions are listed in ``results/audit/manifest.json``.\n"
    )
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out
