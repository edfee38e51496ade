"""Human review: the list of cases flagged for review, and the reviewer's sign-off fed back.

Flagged cases come from JSON records that carry ``"flag": true``: the per-case uncertainty record
of the predict stage, ``results/predict/sub-X/sub-X_uncertainty.json``, read through its one
definition :class:`medpipe.core.records.UncertaintyRecord` (its ``reasons`` become the reason
column), and any other QC record of the same shape (read by the keys ``flag``/``flagged``,
``reason``, ``score`` and ``threshold``). :func:`write_flagged_cases` writes them as a TSV that
doubles as the sign-off template (columns ``subject, stage, decision, comment`` plus the evidence)
and as an HTML table for the report.

The reviewer fills ``decision`` with ``ok``, ``redo`` or ``exclude`` and feeds the file back
(config ``review.signoff``): :func:`excluded_subjects` lists subjects to drop from the subject list,
:func:`rerun_targets` the outputs to re-make with ``snakemake --forcerun``/``--force``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.audit.manifest import write_html_tables
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import write_tsv
from medpipe.core.records import UncertaintyRecord, is_uncertainty_record, subject_from_name

logger = logging.getLogger(__name__)

DECISIONS = ("ok", "redo", "exclude")
SIGNOFF_COLUMNS = ("subject", "stage", "decision", "comment")
_SUBJECT = re.compile(r"^[A-Za-z0-9]+$")
_SUB_IN_NAME = re.compile(r"sub-([A-Za-z0-9]+)")
#: Keys read, in order of preference, for the score of a flagged record.
SCORE_KEYS = ("score", "uncertainty_score", "uncertainty", "value")


@dataclass(frozen=True)
class SignOff:
    """One reviewer decision."""

    subject: str
    stage: str
    decision: str
    comment: str = ""


@dataclass(frozen=True)
class ReviewOutcome:
    """What a sign-off asks for: subjects to exclude, (subject, stage) pairs to re-run, approvals."""

    excluded: list[str]
    rerun: list[tuple[str, str]]
    approved: list[tuple[str, str]]


@dataclass(frozen=True)
class FlaggedCase:
    """A case flagged for human review by a stage."""

    subject: str
    stage: str
    reason: str
    score: float | None
    threshold: float | None


def read_signoff(path: str | Path) -> list[SignOff]:
    """Read a sign-off table (CSV or TSV, delimiter detected) and validate every row.

    Raises
    ------
    ConfigError
        Naming the file, row and value: missing columns, bad subject ID, unknown decision,
        or two different decisions for the same subject and stage.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("reviewer sign-off file not found (config key review.signoff)", path=path)
    text = path.read_text()
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if "\t" in first else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    missing = [c for c in SIGNOFF_COLUMNS[:3] if c not in (reader.fieldnames or [])]
    rows = list(reader)
    if missing:
        raise ConfigError(f"sign-off table lacks column(s) {missing}; expected {list(SIGNOFF_COLUMNS)}", path=path)
    seen: dict[tuple[str, str], SignOff] = {}
    for n, row in enumerate(rows, start=2):
        subject, stage = (row.get("subject") or "").strip(), (row.get("stage") or "").strip()
        decision = (row.get("decision") or "").strip().lower()
        if not _SUBJECT.match(subject):
            raise ConfigError(f"row {n}: subject {subject!r} is not a subject-sheet ID ([A-Za-z0-9]+)", path=path)
        if not decision:
            continue  # not reviewed yet
        if decision not in DECISIONS:
            raise ConfigError(f"row {n}: decision {decision!r} is not one of {DECISIONS}", subject=subject, path=path)
        item = SignOff(subject, stage, decision, (row.get("comment") or "").strip())
        if (subject, stage) in seen and seen[(subject, stage)].decision != decision:
            raise ConfigError(
                f"row {n}: conflicting decisions {seen[(subject, stage)].decision!r} and "
                f"{decision!r} for stage {stage!r}",
                subject=subject,
                path=path,
            )
        seen[(subject, stage)] = item
    return list(seen.values())


def summarise_signoff(signoffs: Iterable[SignOff]) -> ReviewOutcome:
    """Turn decisions into exclusions and re-runs; ``exclude`` wins over ``redo`` for a subject."""
    items = list(signoffs)
    excluded = sorted({s.subject for s in items if s.decision == "exclude"})
    rerun = sorted({(s.subject, s.stage) for s in items if s.decision == "redo" and s.subject not in excluded})
    approved = sorted({(s.subject, s.stage) for s in items if s.decision == "ok"})
    return ReviewOutcome(excluded, rerun, approved)


def excluded_subjects(signoff: str | Path | None) -> list[str]:
    """Subjects a reviewer excluded (empty without a sign-off file); for the subject list in common.smk."""
    if not signoff:
        return []
    return summarise_signoff(read_signoff(signoff)).excluded


def rerun_targets(signoff: str | Path, results_dir: str | Path = "results") -> list[Path]:
    """Existing outputs of each (subject, stage) marked ``redo``: pass them to ``snakemake --force``.

    Downstream outputs become older than the re-made ones and are re-run by the next plain run.
    """
    outcome = summarise_signoff(read_signoff(signoff))
    targets: list[Path] = []
    for subject, stage in outcome.rerun:
        folder = Path(results_dir) / stage / f"sub-{subject}"
        found = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith("."))
        if not found:
            logger.warning("redo %s/%s: no outputs in %s; they will be made by the next run", subject, stage, folder)
        targets += found
    return targets


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _score_reason(score: float | None, threshold: float | None) -> str:
    """Reason of a flagged record that gives none."""
    known = score is not None and threshold is not None
    return f"score {score:.4g} > threshold {threshold:.4g}" if known else "flagged"


def _uncertainty_flag(data: Any, path: Path) -> FlaggedCase | None:
    """The flagged case of a predict-stage uncertainty record, or ``None`` when it is not flagged."""
    record = UncertaintyRecord.from_json(data, subject=subject_from_name(path), path=path)
    if not record.flag:
        return None
    if not _SUBJECT.match(record.subject):
        raise DataError(f"flagged record names no valid subject ({record.subject!r})", path=path)
    reason = record.reason or _score_reason(record.score, record.threshold)
    return FlaggedCase(record.subject, record.stage, reason, record.score, record.threshold)


def read_flag(path: str | Path) -> FlaggedCase | None:
    """The flagged case described by a JSON record, or ``None`` when it is not flagged.

    Uncertainty records (``*_uncertainty.json``) are read as :class:`~medpipe.core.records.UncertaintyRecord`;
    other records by the keys ``flag``/``flagged``, ``subject``, ``stage``, ``reason``, a score
    (:data:`SCORE_KEYS`) and ``threshold``.

    Raises
    ------
    DataError
        Naming the file when it cannot be read, or when a record is flagged but names no valid subject.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read review record: {exc}", path=path) from exc
    if is_uncertainty_record(path):
        return _uncertainty_flag(record, path)
    if not isinstance(record, dict) or not (record.get("flag") or record.get("flagged")):
        return None
    match = _SUB_IN_NAME.search(path.name)
    subject = str(record.get("subject") or (match.group(1) if match else ""))
    if not _SUBJECT.match(subject):
        raise DataError(f"flagged record names no valid subject ({subject!r})", path=path)
    stage = str(record.get("stage") or (path.parts[-3] if len(path.parts) >= 3 else "unknown"))
    score = next((_number(record[k]) for k in SCORE_KEYS if _number(record.get(k)) is not None), None)
    threshold = _number(record.get("threshold"))
    reason = str(record.get("reason") or "") or _score_reason(score, threshold)
    return FlaggedCase(subject, stage, reason, score, threshold)


def flagged_cases(records: Iterable[str | Path]) -> list[FlaggedCase]:
    """Every flagged case among ``records``, sorted by subject and stage."""
    found = [case for p in records if (case := read_flag(p)) is not None]
    return sorted(found, key=lambda c: (c.subject, c.stage))


def write_flagged_cases(
    records: Iterable[str | Path],
    out_tsv: str | Path,
    out_html: str | Path | None = None,
    *,
    signoff: str | Path | None = None,
) -> list[FlaggedCase]:
    """Write the flagged cases as a sign-off template TSV (and an HTML table for the report).

    Decisions already in ``signoff`` are carried over, so the table shows what is still open. The
    HTML page also lists every subject the sign-off excludes from this run, with the stage and the
    comment (for failed jobs: the rule and the error, see :mod:`medpipe.audit.failures`).
    """
    records = list(records)
    cases = flagged_cases(records)
    decisions = read_signoff(signoff) if signoff else []
    done = {(s.subject, s.stage): s for s in decisions}
    rows = []
    for c in cases:
        prior = done.get((c.subject, c.stage))
        rows.append(
            {
                "subject": c.subject,
                "stage": c.stage,
                "decision": prior.decision if prior else "",
                "comment": prior.comment if prior else "",
                "reason": c.reason,
                "score": "" if c.score is None else round(c.score, 6),
                "threshold": "" if c.threshold is None else round(c.threshold, 6),
            }
        )
    table = pd.DataFrame(rows, columns=[*SIGNOFF_COLUMNS, "reason", "score", "threshold"])
    write_tsv(table, out_tsv, na_rep="")  # the sign-off sheet's empty fields are empty, not NA
    if out_html is not None:
        intro = (
            f"{len(cases)} of {len(records)} case records are flagged for review. Fill 'decision' "
            "(ok / redo / exclude) in results/audit/flagged_cases.tsv and set config review.signoff "
            "to it."
        )
        excluded = pd.DataFrame(
            [
                {"subject": d.subject, "stage": d.stage, "comment": d.comment}
                for d in decisions
                if d.decision == "exclude"
            ],
            columns=["subject", "stage", "comment"],
        )
        if len(excluded):
            intro += (
                f" {excluded['subject'].nunique()} subject(s) are excluded from this run by the sign-off "
                f"{Path(str(signoff)).name}: no output of theirs enters the cohort tables."
            )
        write_html_tables(
            {"Cases flagged for review": table, "Subjects excluded by the sign-off": excluded},
            out_html,
            title="Cases flagged for review",
            intro=intro,
        )
    logger.info("%d of %d records flagged for review -> %s", len(cases), len(records), out_tsv)
    return cases
