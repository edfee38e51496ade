"""Snakemake adapter: the human label onto the training grid (label-aware resampling)."""

from medpipe.core.logutil import script_logging
from medpipe.core.resample import resample_label_like

with script_logging(snakemake.log[0]):
    resample_label_like(
        snakemake.input.label,
        snakemake.input.reference,
        snakemake.output.label,
        subject=snakemake.wildcards.subject,
    )
