"""Stage ``postprocess`` (rules/postprocess.smk: ``postprocess``, ``postprocess_decision``, ``export_dicom_seg``).

:mod:`.clean` cleans the predicted label map (per-class components, holes, openings) and brings it back to the
native reference grid; :mod:`.export_dicom_seg` writes the automatic mask as a DICOM-SEG referencing its source series.
"""
