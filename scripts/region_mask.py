"""Snakemake adapter: a derived radiomics region (the peritumoral ring) of one mask source."""

from medpipe.core.logutil import script_logging
from medpipe.radiomics.regions import derive_region

with script_logging(snakemake.log[0]):
    derive_region(
        snakemake.input.mask,
        snakemake.input.image,
        snakemake.output.mask,
        subject=snakemake.wildcards.subject,
        source=snakemake.wildcards.source,
        region=snakemake.wildcards.region,
        definition=snakemake.params.definition,
    )
