"""DICOM ingestion: series discovery, dcm2niix conversion, de-identification, RTSTRUCT/SEG -> mask.

pydicom's value-validation messages are switched off for the whole process when this package is
imported: they are emitted lazily whenever an element is first accessed and may quote the
offending value (a birth date, a name), which must never reach a log.
"""

import pydicom.config

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
