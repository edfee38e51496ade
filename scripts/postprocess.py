"""Snakemake adapter: clean the predicted label map and bring it onto the native reference grid."""

from medpipe.core.logutil import script_logging
from medpipe.postprocess.clean import postprocess_to_native

with script_logging(snakemake.log[0]):
    postprocess_to_native(
        snakemake.input.pred,
        snakemake.input.reference,
        snakemake.output.mask,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=snakemake.params.settings,
        human_mask=snakemake.input.get("human") or None,
        decision=snakemake.input.get("decision") or None,
    )
