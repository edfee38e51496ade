"""Snakemake adapter: dataset fingerprint of the labelled training subjects (medpipe.segment.plan_stage)."""

from medpipe.core.logutil import script_logging
from medpipe.segment.plan_stage import write_fingerprint

with script_logging(snakemake.log[0]):
    write_fingerprint(
        list(snakemake.input.images),
        list(snakemake.input.labels),
        list(snakemake.input.converted),
        snakemake.output.fingerprint,
        subjects=list(snakemake.params.subjects),
        channels=list(snakemake.params.channels),
    )
