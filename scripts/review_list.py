"""Snakemake adapter: cases flagged for review (uncertainty, QC) as a sign-off table and report page."""

from medpipe.audit.review import write_flagged_cases
from medpipe.core.logutil import script_logging

with script_logging(snakemake.log[0]):
    write_flagged_cases(
        snakemake.input.records,
        snakemake.output.table,
        snakemake.output.html,
        signoff=snakemake.params.signoff,
    )
