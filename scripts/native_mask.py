"""Snakemake adapter: a reference-grid mask onto a sequence's own grid (inverse co-registration)."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.coregister import mask_to_sequence_grid

with script_logging(snakemake.log[0]):
    mask_to_sequence_grid(
        snakemake.input.mask,
        snakemake.input.native,
        snakemake.input.transform,
        snakemake.output.mask,
        subject=snakemake.wildcards.subject,
        sequence=snakemake.wildcards.sequence,
    )
