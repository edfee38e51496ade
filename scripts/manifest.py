"""Snakemake adapter: the run manifest (sha256 of every output, software, seeds, hardware)."""
from medpipe.logutil import script_logging
from medpipe.provenance import write_manifest

with script_logging(snakemake.log[0]):
    write_manifest(
        snakemake.params.results_dir,
        snakemake.output.manifest,
        config=snakemake.config,
        subjects_sheet=snakemake.input.sheet,
        benchmarks_dir=snakemake.params.benchmarks_dir,
        summary=snakemake.output.summary,
        methods=snakemake.output.methods,
    )
