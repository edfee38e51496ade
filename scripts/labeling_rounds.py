"""Snakemake adapter: the per-round table and figure of the labeling campaign."""

from medpipe.core.logutil import script_logging
from medpipe.labeling.rounds import rounds_table

with script_logging(snakemake.log[0]):
    rounds_table(
        models=list(snakemake.input.models),
        benchmarks=list(snakemake.input.benchmarks),
        curves=list(snakemake.input.curves),
        selections=list(snakemake.input.selections),
        accepted=list(snakemake.input.accepted),
        batch_metrics=list(snakemake.input.batch_metrics),
        heldout_metrics=list(snakemake.input.heldout_metrics),
        status=dict(snakemake.params.status),
        out_tsv=snakemake.output.table,
        out_png=snakemake.output.plot,
    )
