"""Snakemake adapter: a one-voxel perturbation (erode / dilate / shift) of the human mask."""

from medpipe.core.logutil import script_logging
from medpipe.radiomics.perturb import perturb_mask

with script_logging(snakemake.log[0]):
    perturb_mask(
        snakemake.input.mask,
        snakemake.output.mask,
        subject=snakemake.wildcards.subject,
        kind=snakemake.wildcards.perturbation,
    )
