"""Snakemake adapter: seeded k-fold split of the labelled subjects of the training set."""

from medpipe.core.logutil import script_logging
from medpipe.segment.split import write_folds

with script_logging(snakemake.log[0]):
    write_folds(
        snakemake.params.subjects,
        snakemake.params.k,
        snakemake.params.seed,
        snakemake.output.folds,
        val_fraction=snakemake.params.val_fraction,
    )
