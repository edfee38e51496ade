"""Snakemake adapter: the run manifest (sha256 of every output, software, seeds, hardware)."""

from pathlib import Path

from medpipe.audit.manifest import write_manifest
from medpipe.core.logutil import script_logging

with script_logging(snakemake.log[0]):
    write_manifest(
        Path(snakemake.output.manifest).parents[1],  # results/audit/manifest.json -> results
        snakemake.output.manifest,
        config=snakemake.config,
        subjects_sheet=snakemake.input.sheet,
        benchmarks_dir=snakemake.params.benchmarks_dir,
        summary=snakemake.output.summary,
        methods=snakemake.output.methods,
    )
