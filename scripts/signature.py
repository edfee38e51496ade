"""Snakemake adapter: cross-validated radiomics outcome model of one mask source."""

from medpipe.core.logutil import script_logging
from medpipe.signature.stage import signature_report

with script_logging(snakemake.log[0]):
    signature_report(
        snakemake.input.features,
        snakemake.input.outcomes,
        snakemake.output.oof,
        snakemake.output.selection,
        snakemake.output.model,
        source=snakemake.wildcards.source,
        settings=snakemake.params.settings,
        labelled=snakemake.params.labelled,
        seed=snakemake.params.seed,
        reproducibility=snakemake.input.get("reproducibility"),
        robustness=snakemake.input.get("robustness"),
        sets=snakemake.params.sets,
    )
