"""Benchmark: peak memory of every rule on a finished run against the memory it declares.

Snakemake's ``benchmark:`` files (``benchmarks/<rule>/...tsv``) hold the peak resident set size
(``max_rss``, MiB, summed over the job's process tree) of each job. The declared ``mem_mb`` is read
from the run's own Snakemake logs (``.snakemake/log/*.snakemake.log``), which print each job's
benchmark file and evaluated resources, so rules that scale ``mem_mb`` with input size are
compared job by job. SLURM reads ``--mem`` in MiB, so a job with ``max_rss < mem_mb`` fits.

Usage (after ``make demo``, in the working directory of the run)::

    .venv/bin/python benchmarks/rule_memory.py --workdir . --out benchmarks/results/scale_memory.md
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_JOB = re.compile(r"^(?:local)?rule (\w+):$")
_BENCH = re.compile(r"^\s+benchmark: (\S+)$")
_MEM = re.compile(r"[\s,]mem_mb=(\d+)")


@dataclass(frozen=True)
class Job:
    """One job of a run: its rule, benchmark file and declared memory (MB)."""

    rule: str
    benchmark: str
    mem_mb: int | None


def declared_memory(workdir: Path) -> dict[str, Job]:
    """Benchmark path -> job, from every Snakemake log of ``workdir`` (the newest entry wins)."""
    jobs: dict[str, Job] = {}
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    for log in logs:
        rule: str | None = None
        bench: str | None = None
        for line in log.read_text(errors="replace").splitlines():
            if match := _JOB.match(line):
                rule, bench = match.group(1), None
            elif rule and (match := _BENCH.match(line)):
                bench = match.group(1)
            elif rule and bench and line.lstrip().startswith("resources:"):
                mem = _MEM.search(line)
                jobs[bench] = Job(rule, bench, int(mem.group(1)) if mem else None)
                rule = bench = None
    return jobs


def memory_table(workdir: Path) -> pd.DataFrame:
    """Per rule: jobs, declared mem_mb (max), peak max_rss (max over its jobs), headroom."""
    jobs = declared_memory(workdir)
    rows = []
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        rel = str(tsv.relative_to(workdir))
        job = jobs.get(rel)
        bench = pd.read_csv(tsv, sep="\t")
        max_rss = pd.to_numeric(bench["max_rss"], errors="coerce").max()
        rows.append(
            {
                "rule": job.rule if job else tsv.relative_to(workdir / "benchmarks").parts[0],
                "benchmark": rel,
                "mem_mb": job.mem_mb if job else None,
                "max_rss": float(max_rss),
                "seconds": float(pd.to_numeric(bench["s"], errors="coerce").max()),
            }
        )
    if not rows:
        raise SystemExit(f"no benchmark files under {workdir / 'benchmarks'}: run the workflow first")
    df = pd.DataFrame(rows)
    table = df.groupby("rule").agg(
        jobs=("benchmark", "count"),
        mem_mb=("mem_mb", "max"),
        max_rss=("max_rss", "max"),
        median_rss=("max_rss", "median"),
        max_seconds=("seconds", "max"),
    )
    over = df[df["mem_mb"].notna() & (df["max_rss"] >= df["mem_mb"])].groupby("rule")["benchmark"].count()
    table["jobs_over"] = over.reindex(table.index).fillna(0).astype(int)
    table["peak_fraction"] = table["max_rss"] / table["mem_mb"]
    return table.reset_index().sort_values("rule")


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """The table as Markdown, with a verdict per rule."""
    lines = [
        f"# {title}",
        "",
        "| rule | jobs | declared mem_mb | peak max_rss (MiB) | median max_rss | peak / declared | "
        "jobs over | slowest job (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        declared = "n/a" if pd.isna(r.mem_mb) else f"{int(r.mem_mb)}"
        frac = "n/a" if pd.isna(r.peak_fraction) else f"{r.peak_fraction:.0%}"
        lines.append(
            f"| {r.rule} | {r.jobs} | {declared} | {r.max_rss:.0f} | {r.median_rss:.0f} | {frac} | "
            f"{r.jobs_over} | {r.max_seconds:.1f} |"
        )
    n_over = int(table["jobs_over"].sum())
    lines += ["", f"Jobs whose peak RSS reached their declared mem_mb: {n_over}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("."), help="working directory of a finished run")
    parser.add_argument("--out", type=Path, help="Markdown file to write")
    parser.add_argument("--title", default="Peak memory per rule vs declared mem_mb")
    args = parser.parse_args(argv)
    table = memory_table(args.workdir)
    text = to_markdown(table, args.title)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    sys.stdout.write(text)
    return 1 if int(table["jobs_over"].sum()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
