"""Snakemake adapter: pyradiomics features of one image inside one mask (IBSI codes, provenance)."""

from medpipe.core.logutil import script_logging
from medpipe.radiomics.extract import extract_features

with script_logging(snakemake.log[0]):
    extract_features(
        snakemake.input.image,
        snakemake.input.mask,
        snakemake.output.features,
        subject=snakemake.wildcards.subject,
        source=snakemake.wildcards.source,
        image_name=snakemake.wildcards.image,
        params_file=snakemake.input.params,
        region=snakemake.params.region,
    )
