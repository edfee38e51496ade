"""Snakemake adapter: segment one subject with the fold model(s) that never saw it."""

from medpipe.core.logutil import script_logging
from medpipe.core.plan_record import planned_settings
from medpipe.segment.infer import predict_case

with script_logging(snakemake.log[0]):
    plan = snakemake.input.plan[0] if snakemake.input.plan else None  # segmentation.plan: auto
    predict_case(
        list(snakemake.input.images),
        list(snakemake.input.models),
        snakemake.output.prob,
        snakemake.output.pred,
        snakemake.output.uncertainty,
        subject=snakemake.wildcards.subject,
        settings=planned_settings(snakemake.params.settings, plan, "segmentation"),
        out_uncertainty_map=snakemake.output.entropy,
        out_qc=snakemake.output.qc,
        threads=snakemake.threads,
    )
