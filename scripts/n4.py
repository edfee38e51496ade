"""Snakemake adapter: N4 bias-field correction, or a pass-through where N4 is off for the sequence's modality."""

from medpipe.core.logutil import script_logging
from medpipe.core.records import read_modality
from medpipe.preprocess.n4 import n4_correct

with script_logging(snakemake.log[0]):
    n4_correct(
        snakemake.input.image,
        snakemake.output.image,
        snakemake.output.field,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        settings=snakemake.params.settings,
        seed=snakemake.params.seed,
        sequence=snakemake.wildcards.sequence,
        modality=read_modality(snakemake.input.converted, subject=snakemake.wildcards.subject),
    )
