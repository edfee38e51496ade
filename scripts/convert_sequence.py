"""Snakemake adapter: one sequence of a subject to de-identified NIfTI (DICOM via dcm2niix, or a NIfTI input)."""

from medpipe.convert.dicom import convert_sequence
from medpipe.core.logutil import script_logging

with script_logging(snakemake.log[0]):
    convert_sequence(
        snakemake.input.source,
        snakemake.output.image,
        snakemake.output.deid,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        sequence=snakemake.wildcards.sequence,
        selector=snakemake.params.selector,
    )
