"""Snakemake adapter: automatic vs second reader, each against the first reader, paired by subject."""

from medpipe.core.logutil import script_logging
from medpipe.evaluate.compare import compare_results

with script_logging(snakemake.log[0]):
    compare_results(
        snakemake.input.automatic,
        snakemake.input.reader2,
        snakemake.output.table,
        name_a="automatic",
        name_b="second_reader",
    )
