"""Snakemake adapter: one long feature table from every subject/mask table."""

from medpipe.core.logutil import script_logging
from medpipe.radiomics.extract import collect

with script_logging(snakemake.log[0]):
    collect(
        snakemake.input.tables,
        snakemake.output.table,
        snakemake.output.overview,
        structure=snakemake.params.structure,
    )
