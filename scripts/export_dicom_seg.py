"""Snakemake adapter: the automatic mask as a DICOM-SEG referencing the reference source series."""

from medpipe.core.logutil import script_logging
from medpipe.postprocess.export_dicom_seg import export_subject_dicom_seg

with script_logging(snakemake.log[0]):
    export_subject_dicom_seg(
        snakemake.input.mask,
        snakemake.input.dicom,
        snakemake.input.reference,
        snakemake.output.seg,
        subject=snakemake.wildcards.subject,
        label_name=snakemake.params.label_name,
        classes=snakemake.params.classes,
    )
