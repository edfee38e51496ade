"""Snakemake adapter: bundle every fold's model with what prediction must match (medpipe.segment.bundle)."""

from medpipe.core.logutil import script_logging
from medpipe.segment.bundle import write_bundle

with script_logging(snakemake.log[0]):
    channels = list(snakemake.params.channels)  # input.images is flat, subject-major, in sequence order
    images = list(snakemake.input.images)
    write_bundle(
        snakemake.output.bundle,
        models=list(snakemake.input.models),
        split=snakemake.input.folds,
        images=[images[i : i + len(channels)] for i in range(0, len(images), len(channels))],
        labels=list(snakemake.input.labels),
        subjects=list(snakemake.params.subjects),
        channels=channels,
        label_name=snakemake.params.label_name,
        curves=list(snakemake.input.curves),
        cv_summary=snakemake.input.cv_summary,
        shift_reference=snakemake.input.get("shift_reference"),
        plan_files=list(snakemake.input.get("plan_files", [])),
    )
