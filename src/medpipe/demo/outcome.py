"""Simulated binary outcome of the demo cohort, driven by a lesion property the generator knows.

The outcome ("response") of subject *i* is 1 when ``z(necrotic fraction) + NOISE_SD * e_i`` is above the
cohort's median, 0 otherwise (so half the subjects are events), where the necrotic fraction is the share of
the lesion (rim + core of ``truth/<subject>/lesion_parts.nii.gz``) that is necrotic core, ``z`` standardises
it over the cohort and ``e_i`` is standard normal noise from its own seeded stream (the other draws of the
generator are unchanged). A radiomics model can find it through the intensity distribution inside the lesion
mask (the core is darker than the enhancing rim on T1w), so ``make demo`` has a meaningful AUC to compare
between human-mask and automatic-mask features. Written to ``truth/outcomes.tsv``
(``subject``, ``response``, ``necrotic_fraction``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.core.io import load_nifti, write_tsv

logger = logging.getLogger(__name__)

#: Standard deviation of the noise added to the standardised necrotic fraction.
NOISE_SD = 0.5
#: Outcome column of ``truth/outcomes.tsv``.
OUTCOME_COLUMN = "response"
#: Labels of ``lesion_parts``: 1 enhancing rim, 2 necrotic core (3 edema is not lesion).
RIM, CORE = 1, 2


def necrotic_fraction(parts_path: str | Path, *, subject: str) -> float:
    """Share of the lesion (rim + core voxels) that is necrotic core."""
    parts = np.asarray(load_nifti(parts_path, subject=subject).dataobj)
    core = int((parts == CORE).sum())
    lesion = core + int((parts == RIM).sum())
    return core / lesion


def write_outcomes(truth_dir: str | Path, subjects: Sequence[str], seed: int) -> Path:
    """Write ``truth_dir/outcomes.tsv`` for ``subjects`` (see the module docstring)."""
    truth = Path(truth_dir)
    fraction = np.array([necrotic_fraction(truth / s / "lesion_parts.nii.gz", subject=s) for s in subjects])
    noise = np.random.default_rng([seed, 7919]).standard_normal(len(subjects))
    spread = fraction.std() or 1.0
    score = (fraction - fraction.mean()) / spread + NOISE_SD * noise
    response = (score > np.median(score)).astype(int)
    table = pd.DataFrame(
        {"subject": list(subjects), OUTCOME_COLUMN: response, "necrotic_fraction": np.round(fraction, 6)}
    )
    logger.info("demo outcome: %d of %d subjects respond", int(response.sum()), len(subjects))
    return write_tsv(table, truth / "outcomes.tsv")
