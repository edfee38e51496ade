"""Snakemake adapter: the accepted corrections of one labeling round as a table (the round folder checked)."""

from medpipe.core.logutil import script_logging
from medpipe.labeling.ingest import ingest_round

with script_logging(snakemake.log[0]):
    ingest_round(
        list(snakemake.input.accepted),
        snakemake.output.table,
        batch=list(snakemake.params.batch),
        round_index=int(snakemake.wildcards.round),
        folder=snakemake.params.folder,
    )
