"""Snakemake adapter: the template, its brain mask and tissue classes (preprocess.template)."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.template_stage import write_template

with script_logging(snakemake.log[0]):
    write_template(
        snakemake.output.image, snakemake.output.brain, snakemake.output.tissue, settings=snakemake.params.settings
    )
