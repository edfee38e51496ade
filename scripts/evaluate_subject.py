"""Snakemake adapter: metrics of the automatic vs the human mask of one subject (native grid)."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.metrics import evaluate_pair

with script_logging(snakemake.log[0]):
    evaluate_pair(
        snakemake.input.auto,
        snakemake.input.human,
        snakemake.output.metrics,
        subject=snakemake.wildcards.subject,
        labels=snakemake.params.labels,
    )
