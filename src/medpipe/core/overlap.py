"""Overlap of two masks: the one Dice coefficient every stage uses (evaluation, template check, rerun audit, TTA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def dice_score(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    """Dice of two masks (every non-zero voxel is the structure); 1 when both are empty, 0 when exactly one is."""
    x = np.asarray(a) != 0
    y = np.asarray(b) != 0
    total = int(np.count_nonzero(x)) + int(np.count_nonzero(y))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(x & y)) / total
