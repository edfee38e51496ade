"""Snakemake adapter: brain mask of the N4-corrected reference sequence."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.skullstrip import skull_strip

with script_logging(snakemake.log[0]):
    skull_strip(
        snakemake.input.image,
        snakemake.output.mask,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=snakemake.params.settings,
    )
