"""Snakemake adapter: a template-space mask or atlas onto the native reference grid (inverse transforms)."""

from medpipe.core.logutil import script_logging
from medpipe.preprocess.template import TemplateTransforms, mask_to_native

with script_logging(snakemake.log[0]):
    mask_to_native(
        snakemake.input.mask,
        snakemake.input.native,
        TemplateTransforms(snakemake.input.affine, snakemake.input.warp, snakemake.input.inverse_warp),
        snakemake.output.mask,
        subject=snakemake.wildcards.subject,
        out_qc=snakemake.output.qc,
    )
