"""Snakemake adapter: the training set's shift reference with calibrated thresholds (medpipe.evaluate.shift)."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.shift_stage import cases_from_job, run_reference

with script_logging(snakemake.log[0]):
    cases = cases_from_job(snakemake.params, snakemake.input)
    run_reference(cases, snakemake.params.settings, snakemake.output.reference)
