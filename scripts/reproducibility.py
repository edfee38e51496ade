"""Snakemake adapter: CCC / ICC / Bland-Altman per feature and retention per class."""

from medpipe.core.logutil import script_logging
from medpipe.stats.agreement import reproducibility_report

with script_logging(snakemake.log[0]):
    reproducibility_report(
        snakemake.input.features,
        snakemake.output.table,
        snakemake.output.retention,
        snakemake.output.plot,
        source_a=snakemake.params.source_a,
        source_b=snakemake.params.source_b,
        cutoff=snakemake.params.cutoff,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        min_subjects=snakemake.params.min_subjects,
    )
