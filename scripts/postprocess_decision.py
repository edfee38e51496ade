"""Snakemake adapter: decide per class whether keeping the largest component helps (validation data)."""

from medpipe.core.logutil import script_logging
from medpipe.postprocess.clean import decide_largest_component

with script_logging(snakemake.log[0]):
    decide_largest_component(
        list(zip(snakemake.input.preds, snakemake.input.labels, strict=True)),
        snakemake.output.decision,
        labels=snakemake.params.labels,
        connectivity=snakemake.params.connectivity,
    )
