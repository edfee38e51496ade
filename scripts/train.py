"""Snakemake adapter: train the model of one cross-validation fold."""

from medpipe.core.logutil import script_logging
from medpipe.segment.train import train_fold

with script_logging(snakemake.log[0]):
    n = snakemake.params.n_sequences  # input.images is flat, subject-major, in sequence order
    images = list(snakemake.input.images)
    train_fold(
        [images[i : i + n] for i in range(0, len(images), n)],
        list(snakemake.input.labels),
        snakemake.output.model,
        snakemake.output.curve,
        snakemake.output.plot,
        subjects=list(snakemake.params.subjects),
        fold=int(snakemake.wildcards.fold),
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        deterministic=snakemake.params.deterministic,
        threads=snakemake.threads,
    )
