"""Failed jobs of a run, written as a sign-off sheet: which subject failed in which rule, and why.

With ``--keep-going`` a broken subject fails only its own jobs, but the tables over the whole cohort
(radiomics table, reproducibility statistics, manifest, report) wait for every subject. When a run
ends with failures, the Snakefile's ``onerror`` handler calls :func:`write_failures`: it reads the
failed jobs from Snakemake's log (the ``log: ... (check log file(s) for error details)`` lines of
each failed job or job group), takes the reason from each job's own log (the last
``SomethingError: message`` line, which names the subject, file and value) and writes
``logs/failed_jobs.tsv``.

That table has the columns of a reviewer sign-off (``subject, stage, decision, comment``, plus
``rule`` and ``log``) with ``decision`` pre-filled as ``exclude``. Reasons quote files: any path under
a folder or file of the subject sheet is replaced by ``<subject-sheet path>`` (export folders are often
named after the patient), so the sheet and the report's review page stay free of PHI; the job log
named in the ``log`` column has the full message. Pointing ``review.signoff`` at it
(after reading it: set ``redo`` or clear a row once the data are fixed) drops the failed subjects, so
the cohort tables and the report are built from the rest; the report's review page lists every
excluded subject with the reason.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medpipe.audit.review import SIGNOFF_COLUMNS
from medpipe.core.io import write_tsv

logger = logging.getLogger(__name__)

FAILURE_COLUMNS = (*SIGNOFF_COLUMNS, "rule", "log")
_LOG_LINE = re.compile(r"log: (.+?) \(check log file\(s\) for error details\)")
_JOB_LOG = re.compile(r"(?:^|/)logs/(?P<rule>[A-Za-z0-9_]+)/[^/]+$")
_SUBJECT = re.compile(r"sub-([A-Za-z0-9]+)")
_ERROR = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Exit)): (.+)$")
_MAX_REASON = 400


@dataclass(frozen=True)
class FailedJob:
    """One failed job: its rule, the subject it belongs to (None for cohort jobs), its log, why."""

    rule: str
    subject: str | None
    log: str
    reason: str


def failure_reason(job_log: str | Path) -> str:
    """The last ``XyzError: message`` line of a job's log, else its last non-empty line."""
    path = Path(job_log)
    try:
        lines = [ln.rstrip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"no log written ({path})"
    for line in reversed(lines):
        if match := _ERROR.search(line):
            return f"{match.group(1)}: {match.group(2)}"[:_MAX_REASON]
    return (lines[-1] if lines else "empty log")[:_MAX_REASON]


def redact_paths(text: str, private: Iterable[str], workdir: str | Path = ".") -> str:
    """Replace every path that starts with one of ``private`` (as given or absolute) by a placeholder."""
    prefixes: set[str] = set()
    for raw in private:
        if raw and str(raw).strip():
            value = str(raw).strip().rstrip("/")
            prefixes |= {value, os.path.abspath(os.path.join(str(workdir), value))}
    for prefix in sorted(prefixes, key=len, reverse=True):
        text = re.sub(re.escape(prefix) + r"[^\s,;:'\"()]*", "<subject-sheet path>", text)
    return text


def failed_jobs(
    snakemake_log: str | Path, workdir: str | Path = ".", private_paths: Iterable[str] = ()
) -> list[FailedJob]:
    """Failed jobs named in a Snakemake log, in the order they failed (each job once).

    ``private_paths`` (the subject sheet's folders and files) are redacted from the reasons.
    """
    private = list(private_paths)
    text = Path(snakemake_log).read_text(errors="replace")
    seen: dict[str, FailedJob] = {}
    for match in _LOG_LINE.finditer(text):
        for raw in match.group(1).split(", "):
            log = raw.strip()
            job = _JOB_LOG.search(log)
            if job is None or log in seen:
                continue
            subject = _SUBJECT.search(Path(log).name)
            reason = redact_paths(failure_reason(Path(workdir) / log), private, workdir)
            seen[log] = FailedJob(job.group("rule"), subject.group(1) if subject else None, log, reason)
    return list(seen.values())


def write_failures(
    snakemake_log: str | Path | Iterable[str | Path] | None,
    out_tsv: str | Path,
    workdir: str | Path = ".",
    private_paths: Iterable[str] = (),
) -> list[FailedJob]:
    """Write the failed jobs of a run as a sign-off sheet (``decision`` = ``exclude``); return them.

    ``snakemake_log`` is what Snakemake hands to ``onerror`` (a list of log files in Snakemake 9,
    a single path in older releases). Cohort jobs (no subject in their log name: training of a fold,
    the cohort tables) are logged here but have no row: excluding a subject is the only decision a
    sign-off can take.
    """
    if snakemake_log is None:
        logs: list[Path] = []
    elif isinstance(snakemake_log, str | Path):
        logs = [Path(snakemake_log)]
    else:
        logs = [Path(p) for p in snakemake_log]
    logs = [p for p in logs if p.is_file()]
    if not logs:
        logger.warning("no Snakemake log to read failed jobs from (%s)", snakemake_log)
        return []
    private = list(private_paths)
    found: dict[str, FailedJob] = {}
    for log in logs:
        for job in failed_jobs(log, workdir, private):
            found.setdefault(job.log, job)
    jobs = list(found.values())
    rows = [
        {
            "subject": j.subject,
            "stage": j.rule,
            "decision": "exclude",
            "comment": f"job {j.rule} failed: {j.reason}",
            "rule": j.rule,
            "log": j.log,
        }
        for j in jobs
        if j.subject
    ]
    for j in jobs:
        if not j.subject:
            logger.warning("cohort job %s failed (%s): %s", j.rule, j.log, j.reason)
    write_tsv(pd.DataFrame(rows, columns=list(FAILURE_COLUMNS)), out_tsv, na_rep="")
    subjects = sorted({j.subject for j in jobs if j.subject})
    logger.warning(
        "%d failed job(s) of %d subject(s) %s -> %s (set review.signoff to it to exclude them)",
        len(jobs),
        len(subjects),
        subjects,
        out_tsv,
    )
    return jobs
