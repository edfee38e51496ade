"""Snakemake adapter: feature robustness to mask perturbations (CCC / ICC per feature, retention per class)."""

from medpipe.core.logutil import script_logging
from medpipe.stats.robustness import robustness_report

with script_logging(snakemake.log[0]):
    robustness_report(
        snakemake.input.features,
        snakemake.output.table,
        snakemake.output.by_class,
        snakemake.output.plot,
        reference="human",
        perturbations=snakemake.params.perturbations,
        cutoff=snakemake.params.cutoff,
        n_boot=snakemake.params.n_boot,
        seed=snakemake.params.seed,
        min_subjects=snakemake.params.min_subjects,
    )
