"""Snakemake adapter: convert one DICOM series of a subject to de-identified NIfTI (dcm2niix)."""

from medpipe.dicom.convert import convert_sequence
from medpipe.logutil import script_logging

with script_logging(snakemake.log[0]):
    convert_sequence(
        snakemake.input.dicom,
        snakemake.output.image,
        snakemake.output.deid,
        snakemake.output.qc,
        subject=snakemake.wildcards.subject,
        sequence=snakemake.wildcards.sequence,
        selector=snakemake.params.selector,
    )
