"""Snakemake adapter: the worklist of one labeling round (what to open, edit and save where)."""

from medpipe.core.logutil import script_logging
from medpipe.labeling.worklist import write_worklist

with script_logging(snakemake.log[0]):
    files = snakemake.params.files
    write_worklist(
        snakemake.input.selection,
        snakemake.output.worklist,
        images=files["images"],
        masks=files["masks"],
        dicom_segs=files["dicom_segs"],
        corrections=files["corrections"],
    )
