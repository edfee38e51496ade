"""What every stage shares: errors, config validation, file formats, grids, sidecars, logging, determinism.

* :mod:`~medpipe.core.errors`: the exception classes (every message names subject, file and value).
* :mod:`~medpipe.core.config`: JSON-Schema validation of config.yaml and the subject sheet (the schema fills defaults).
* :mod:`~medpipe.core.io`: the only module that knows file formats (NIfTI, TSV, PNG) and toolkit conventions.
* :mod:`~medpipe.core.geometry`, :mod:`~medpipe.core.resample`: grids, boundary checks, moving images between grids.
* :mod:`~medpipe.core.overlap`: the one Dice coefficient (postprocess decision, template check, audit, TTA agreement).
* :mod:`~medpipe.core.sidecar`: the JSON sidecar every output carries; :mod:`~medpipe.core.records`: the
  records one stage writes and another reads.
* :mod:`~medpipe.core.logutil`, :mod:`~medpipe.core.determinism`, :mod:`~medpipe.core.resources`,
  :mod:`~medpipe.core.qc` (QC figure helpers).

Called from ``rules/common.smk`` (config and sheet validation, job environment, memory requests) and imported
by every stage package. ``core`` imports no stage package (import-linter contract in ``pyproject.toml``).
"""
