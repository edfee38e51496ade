"""Snakemake adapter: every subject's domain-shift flags, their performance per set and the review records."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.shift_stage import load_cases, run_flags

with script_logging(snakemake.log[0]):
    p, i, o = snakemake.params, snakemake.input, snakemake.output
    cases = load_cases(
        list(p.subjects),
        sets=p.sets,
        sites=p.sites,
        channels=list(p.channels),
        reference_images=list(i.reference_images),
        normalised=list(i.normalised),
        auto_masks=list(i.auto_masks),
        uncertainty=list(i.uncertainty),
        metrics=i.get("metrics"),
    )
    records = dict(zip(p.subjects, o.records, strict=True))
    run_flags(
        cases,
        i.reference,
        out_table=o.table,
        out_performance=o.performance,
        out_plot=o.plot,
        review_records=records,
    )
