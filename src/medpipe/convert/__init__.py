"""Stage ``convert`` (rules/convert.smk: ``convert_sequence``, ``convert_label``).

DICOM series discovery, refusal checks, dcm2niix conversion and de-identification (:mod:`.discover`,
:mod:`.checks`, :mod:`.dicom`, :mod:`.deid`), body-weight SUV of PET series (:mod:`.suv`), NIfTI inputs
(:mod:`.nifti`), the human label from NIfTI, RTSTRUCT or DICOM-SEG onto the reference grid (:mod:`.labels`,
:mod:`.rtstruct`, :mod:`.dicom_seg`; several structures per subject: :mod:`.classes`), and the subject sheet
builder behind ``medpipe sheet`` (:mod:`.sheet`).

pydicom's value-validation messages are switched off for the whole process when this package is
imported: they are emitted lazily whenever an element is first accessed and may quote the
offending value (a birth date, a name), which must never reach a log.
"""

import pydicom.config

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
