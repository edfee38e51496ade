"""Snakemake adapter: metrics of the second reader's mask vs the first reader's (human) mask of one subject."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.metrics import evaluate_pair

with script_logging(snakemake.log[0]):
    evaluate_pair(
        snakemake.input.reader2,  # in the columns of the automatic mask (volume_auto_ml = the second reader's)
        snakemake.input.human,
        snakemake.output.metrics,
        subject=snakemake.wildcards.subject,
        labels=snakemake.params.labels,
    )
