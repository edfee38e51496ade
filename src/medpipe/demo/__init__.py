"""Embedded demo cohort: synthetic MR heads with lesions, written as DICOM, with ground truth.

Built from nilearn's MNI152 template (no downloads). Entry point :func:`generate_demo_cohort`
(``medpipe demo-data``); see :mod:`medpipe.demo.cohort` for the folder layout.
"""

from medpipe.demo.cohort import DemoSettings, cohort_is_current, generate_demo_cohort, subject_ids
from medpipe.demo.profile_phi import PHI_TOKEN
from medpipe.demo.subject import ScannerProfile

__all__ = ["PHI_TOKEN", "DemoSettings", "ScannerProfile", "cohort_is_current", "generate_demo_cohort", "subject_ids"]
