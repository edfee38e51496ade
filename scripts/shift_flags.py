"""Snakemake adapter: every subject's domain-shift flags, their performance per set and the review records."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.shift_stage import cases_from_job, run_flags

with script_logging(snakemake.log[0]):
    o = snakemake.output
    run_flags(
        cases_from_job(snakemake.params, snakemake.input),
        snakemake.input.reference,
        out_table=o.table,
        out_performance=o.performance,
        out_plot=o.plot,
        review_records=dict(zip(snakemake.params.subjects, o.records, strict=True)),
    )
