"""Snakemake adapter: intensity normalisation and resampling onto the training grid."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.normalise import normalise_image

with script_logging(snakemake.log[0]):
    normalise_image(
        snakemake.input.image,
        snakemake.input.brainmask,
        snakemake.output.image,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=snakemake.params.settings,
        target_spacing_mm=snakemake.params.target_spacing_mm,
        sequence=snakemake.wildcards.sequence,
    )
