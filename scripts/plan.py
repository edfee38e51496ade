"""Snakemake adapter: plan the run from its dataset fingerprint (medpipe.segment.plan_stage)."""

from medpipe.core.logutil import script_logging
from medpipe.segment.plan_stage import write_plan

with script_logging(snakemake.log[0]):
    write_plan(
        snakemake.input.fingerprint,
        snakemake.output.plan,
        snakemake.output.table,
        typed_config=snakemake.params.typed_config,
        budget_minutes=snakemake.params.budget_minutes,
        memory_mb=snakemake.params.memory_mb,
        threads=snakemake.threads,
    )
