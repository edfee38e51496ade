"""Snakemake adapter: co-register a sequence to the reference sequence (ANTs)."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.coregister import coregister

with script_logging(snakemake.log[0]):
    coregister(
        snakemake.input.moving,
        snakemake.input.fixed,
        snakemake.output.image,
        snakemake.output.transform,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        brainmask=snakemake.input.brainmask[0] if snakemake.input.brainmask else None,  # coregister.fixed: brain
    )
