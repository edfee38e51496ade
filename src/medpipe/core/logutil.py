"""Logging set-up shared by the Snakemake script adapters and the CLI."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Send medpipe's log records to ``log_file`` (or stderr) at ``level``."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


@contextmanager
def script_logging(log_file: str | Path) -> Iterator[logging.Logger]:
    """Context for a Snakemake script: log to the rule's log file, record any exception there.

    The exception is re-raised so Snakemake marks the job as failed; its message (which names
    the subject, file and value) is the last line of the log.
    """
    configure(log_file)
    log = logging.getLogger("medpipe.script")
    try:
        yield log
    except Exception as exc:
        log.exception("failed: %s", exc)
        raise
