"""Snakemake adapter: the run manifest (sha256 of every output, software, seeds, hardware)."""
from pathlib import Path

from medpipe.logutil import script_logging
from medpipe.provenance import write_manifest

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
