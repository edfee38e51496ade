"""Snakemake adapter: the automatic mask as a DICOM-SEG referencing the reference source series."""
from medpipe.dicom_seg_export import export_subject_dicom_seg
from medpipe.logutil import script_logging

with script_logging(snakemake.log[0]):
    export_subject_dicom_seg(
        snakemake.input.mask,
        snakemake.input.dicom,
        snakemake.input.reference,
        snakemake.output.seg,
        subject=snakemake.wildcards.subject,
        label_name=snakemake.params.label_name,
    )
