"""Snakemake adapter: cases flagged for review (uncertainty, QC) as a sign-off table and report page."""
from medpipe.logutil import script_logging
from medpipe.review import write_flagged_cases

with script_logging(snakemake.log[0]):
    write_flagged_cases(
        snakemake.input.records,
        snakemake.output.table,
        snakemake.output.html,
        signoff=snakemake.params.signoff,
    )
