"""Snakemake adapter: DeLong comparison of the outcome models of two mask sources."""

from medpipe.core.logutil import script_logging
from medpipe.signature.stage import comparison_report

with script_logging(snakemake.log[0]):
    comparison_report(
        dict(zip(snakemake.params.sources, snakemake.input.oof, strict=True)),
        snakemake.output.table,
        snakemake.output.roc,
        snakemake.output.calibration,
        pairs=snakemake.params.pairs,
        level=snakemake.params.level,
        ci=snakemake.params.ci,
    )
