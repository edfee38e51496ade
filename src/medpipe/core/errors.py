"""Exceptions raised by medpipe.

Every error names the subject, the file and the offending value where known, so that a user
reading a Snakemake log can act on it without reading the code.
"""

from __future__ import annotations

from pathlib import Path


class MedpipeError(Exception):
    """Base class of all medpipe errors."""

    def __init__(self, message: str, *, subject: str | None = None, path: str | Path | None = None) -> None:
        parts = []
        if subject:
            parts.append(f"subject {subject}")
        if path is not None:
            parts.append(f"file {path}")
        prefix = f"[{', '.join(parts)}] " if parts else ""
        super().__init__(prefix + message)
        #: The message without the ``[subject ..., file ...]`` prefix (for a caller that re-raises with context).
        self.message = message
        self.subject = subject
        self.path = None if path is None else str(path)


class ConfigError(MedpipeError):
    """Invalid configuration or subject sheet."""


class GeometryError(MedpipeError):
    """Two images that must share a grid do not, or a geometry is invalid."""


class DicomError(MedpipeError):
    """A DICOM series was refused or could not be converted."""


class DataError(MedpipeError):
    """Image content is invalid (NaN voxels, empty mask, wrong channel count, ...)."""
