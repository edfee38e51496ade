"""Snakemake adapter: the second reader's metrics against the first reader, summarised per set and site."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.metrics import summarise

with script_logging(snakemake.log[0]):
    summarise(
        snakemake.input.tables,
        snakemake.output.metrics,
        snakemake.output.summary,
        snakemake.output.plot,
        seed=snakemake.params.seed,
        n_boot=snakemake.params.n_boot,
        sets=snakemake.params.sets,
        sites=snakemake.params.sites,
    )
