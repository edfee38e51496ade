"""The one Dice coefficient (medpipe.core.overlap) that postprocessing, the template check, the audit and TTA use."""

from __future__ import annotations

import numpy as np

from medpipe.audit import verify
from medpipe.core.overlap import dice_score
from medpipe.postprocess import clean
from medpipe.preprocess import template_stage
from medpipe.segment import infer


def test_dice_values_and_edge_cases() -> None:
    a = np.zeros((4, 4, 4), np.uint8)
    b = np.zeros_like(a)
    assert dice_score(a, b) == 1.0  # both empty
    a[:2] = 1
    assert dice_score(a, b) == 0.0  # exactly one empty
    b[1:3] = 2  # any non-zero value is the structure
    assert dice_score(a, b) == 2 * 16 / (32 + 32)
    assert dice_score(a.astype(bool), b.astype(bool)) == dice_score(a, b)


def test_every_stage_uses_the_same_dice() -> None:
    for module in (clean, template_stage, verify, infer):
        assert module.dice_score is dice_score, module.__name__
