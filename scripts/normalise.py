"""Snakemake adapter: intensity normalisation and resampling onto the training grid."""

from medpipe.core.logutil import script_logging
from medpipe.core.plan_record import planned_settings
from medpipe.preprocess.normalise import normalise_image

with script_logging(snakemake.log[0]):
    plan = snakemake.input.plan[0] if snakemake.input.plan else None  # segmentation.plan: auto
    normalise_image(
        snakemake.input.image,
        snakemake.input.brainmask,
        snakemake.output.image,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=planned_settings(snakemake.params.settings, plan, "preprocess", "normalise"),
        target_spacing_mm=planned_settings(
            {"target_spacing_mm": snakemake.params.target_spacing_mm}, plan, "preprocess"
        )["target_spacing_mm"],
        sequence=snakemake.wildcards.sequence,
    )
