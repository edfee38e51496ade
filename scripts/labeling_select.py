"""Snakemake adapter: select the batch of one labeling round for correction."""

from medpipe.core.logutil import script_logging
from medpipe.labeling.select import select_batch

with script_logging(snakemake.log[0]):
    select_batch(
        list(snakemake.input.uncertainty),
        snakemake.output.selection,
        pool=list(snakemake.params.pool),
        strategy=snakemake.params.strategy,
        batch_size=snakemake.params.batch_size,
        seed=snakemake.params.seed,
        round_index=int(snakemake.wildcards.round),
        explicit=list(snakemake.params.explicit),
    )
