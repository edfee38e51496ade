"""Snakemake adapter: all per-subject metrics, their summary per set and site, box plots, best/median/worst cases."""

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
        qc_images=snakemake.input.qc,
        out_cases=snakemake.output.cases,
        sets=snakemake.params.sets,
        sites=snakemake.params.sites,
        out_by_site=snakemake.output.by_site,
    )
