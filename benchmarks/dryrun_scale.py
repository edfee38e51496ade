"""Benchmark: how long `snakemake -n` takes to plan the whole DAG for a large cohort.

A synthetic subject sheet of N subjects (default 1,000) points at empty DICOM folders and empty
label files: the sheet validation only checks that they exist, and a dry run reads no data. The
script times the dry run from the repository root exactly as a user would type it (the
workstation profile ``profiles/default`` is picked up automatically) and writes a Markdown table.

Usage::

    .venv/bin/python benchmarks/dryrun_scale.py --subjects 1000 --repeats 3 \
        --out benchmarks/results/scale_dryrun.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOAL_S = 10.0


def make_cohort(workdir: Path, n_subjects: int, labelled_fraction: float = 1.0) -> Path:
    """Write a subject sheet of ``n_subjects`` with empty DICOM folders and empty label files.

    Returns the path of the config file that points the workflow at the sheet.
    """
    rows = ["subject\tdicom\tlabel"]
    n_labelled = round(n_subjects * labelled_fraction)
    for i in range(n_subjects):
        subject = f"S{i:05d}"
        dicom = workdir / "dicom" / subject
        dicom.mkdir(parents=True, exist_ok=True)
        label = ""
        if i < n_labelled:
            label_path = workdir / "labels" / f"{subject}_mask.nii.gz"
            label_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.touch()
            label = str(label_path.relative_to(workdir))
        rows.append(f"{subject}\t{dicom.relative_to(workdir)}\t{label}")
    sheet = workdir / "subjects.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    config = workdir / "scale.yaml"
    config.write_text(yaml.safe_dump({"subjects": str(sheet.relative_to(workdir))}))
    return config


def dry_run(workdir: Path, base: Path, config: Path, extra: list[str]) -> tuple[float, int, str]:
    """Time one ``snakemake -n`` from the repository root; return (seconds, planned jobs, output)."""
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(base),
        str(config),
        "-n",
        "--quiet",
        "rules",
        *extra,
    ]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed ({proc.returncode}):\n{out[-4000:]}")
    match = re.search(r"^total\s+(\d+)", out, flags=re.MULTILINE)
    return seconds, int(match.group(1)) if match else -1, out


def job_table(output: str) -> list[tuple[str, int]]:
    """(rule, count) rows of snakemake's 'Job stats' table."""
    block = output.split("Job stats:", 1)[-1].split("\ntotal", 1)[0]
    rows = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s+(\d+)\s*$", block, flags=re.MULTILINE)
    return [(rule, int(n)) for rule, n in rows]


def machine() -> str:
    """One line describing the CPU the numbers were taken on."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        cpu = names[0] if names else cpu
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at start"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1000], help="cohort sizes to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--base-config",
        type=Path,
        default=REPO / "config" / "config.yaml",
        help="configuration the synthetic sheet is combined with",
    )
    parser.add_argument("--out", type=Path, help="Markdown file to write the results to")
    parser.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = parser.parse_args(argv)

    lines = [
        "# `snakemake -n` for large synthetic cohorts",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/dryrun_scale.py', *(argv or sys.argv[1:])])}`",
        "",
        f"Machine: {machine()}. Goal: <= {GOAL_S:.0f} s for 1,000 subjects.",
        f"Base configuration: `{args.base_config}` (its `subjects:` replaced by the synthetic sheet).",
        "",
        "| subjects | planned jobs | dry run (s), median | all repeats (s) | goal met |",
        "|---:|---:|---:|---|---|",
    ]
    last_output = ""
    for n in args.subjects:
        with tempfile.TemporaryDirectory(prefix=f"medpipe-scale-{n}-") as tmp:
            workdir = Path(tmp)
            config = make_cohort(workdir, n)
            times, jobs = [], -1
            for _ in range(args.repeats):
                seconds, jobs, last_output = dry_run(workdir, args.base_config.resolve(), config, args.extra)
                times.append(seconds)
                print(f"{n} subjects: {jobs} jobs planned in {seconds:.2f} s", flush=True)
        median = statistics.median(times)
        lines.append(
            f"| {n} | {jobs} | {median:.2f} | {', '.join(f'{t:.2f}' for t in times)} | "
            f"{'yes' if n != 1000 or median <= GOAL_S else 'no'} |"
        )
    lines += [
        "",
        f"Jobs per rule for the largest cohort ({args.subjects[-1]} subjects):",
        "",
        "| rule | jobs |",
        "|---|---:|",
    ]
    lines += [f"| {rule} | {n} |" for rule, n in job_table(last_output)]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
