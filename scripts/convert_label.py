"""Snakemake adapter: the human label (NIfTI, RTSTRUCT or DICOM-SEG) onto the reference image grid."""

from medpipe.convert.classes import classes_from_records
from medpipe.convert.labels import import_label
from medpipe.core.logutil import script_logging

with script_logging(snakemake.log[0]):
    import_label(
        snakemake.input.label,
        snakemake.input.reference,
        snakemake.output.mask,
        subject=snakemake.wildcards.subject,
        roi_pattern=snakemake.params.roi,
        out_qc=snakemake.output.qc,
        frame_of_reference=snakemake.params.frame_of_reference,
        threshold=snakemake.params.threshold,
        classes=classes_from_records(snakemake.params.classes),
    )
