"""Snakemake adapter: the training set's shift reference with calibrated thresholds (medpipe.evaluate.shift)."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.shift_stage import load_cases, run_reference

with script_logging(snakemake.log[0]):
    p, i = snakemake.params, snakemake.input
    cases = load_cases(
        list(p.subjects),
        sets=p.sets,
        sites=p.sites,
        channels=list(p.channels),
        reference_images=list(i.reference_images),
        normalised=list(i.normalised),
        auto_masks=list(i.auto_masks),
        uncertainty=list(i.uncertainty),
        metrics=i.metrics,
    )
    run_reference(cases, p.settings, snakemake.output.reference)
