"""Snakemake adapter: the brain-extracted reference onto the template (ANTs affine + SyN), with its check."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.template import TemplateTransforms
from medpipe.preprocess.template_stage import register_reference

with script_logging(snakemake.log[0]):
    register_reference(
        snakemake.input.image,
        snakemake.input.brainmask,
        snakemake.input.template,
        snakemake.input.template_brain,
        TemplateTransforms(snakemake.output.affine, snakemake.output.warp, snakemake.output.inverse_warp),
        snakemake.output.image,
        snakemake.output.record,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
    )
