"""Snakemake adapter: the radiomics image plus seeded Gaussian noise (robustness source `noise`)."""

from medpipe.core.logutil import script_logging
from medpipe.radiomics.perturb import perturb_image

with script_logging(snakemake.log[0]):
    perturb_image(
        snakemake.input.image,
        snakemake.input.mask,
        snakemake.output.image,
        subject=snakemake.wildcards.subject,
        fraction=snakemake.params.fraction,
        seed=snakemake.params.seed,
    )
