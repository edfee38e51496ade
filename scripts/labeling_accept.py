"""Snakemake adapter: check one corrected mask and accept it as a label of the next round."""

from medpipe.core.logutil import script_logging
from medpipe.labeling.ingest import accept_correction

with script_logging(snakemake.log[0]):
    accept_correction(
        snakemake.input.correction,
        snakemake.input.reference,
        snakemake.input.prediction,
        snakemake.output.mask,
        subject=snakemake.wildcards.subject,
        round_index=int(snakemake.wildcards.round),
        batch=list(snakemake.params.batch),
        n_classes=snakemake.params.n_classes,
    )
