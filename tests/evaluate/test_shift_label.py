"""The shift flags read the Dice and human volume of the whole structure, the rows the predicted volume matches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medpipe.core.errors import DataError
from medpipe.evaluate.metrics import write_metrics
from medpipe.evaluate.shift_stage import _labelled


def _table(tmp_path: Path) -> Path:
    rows = [
        {"subject": "001", "label": "rim", "label_value": 1, "dice": 0.6, "volume_human_ml": 3.0},
        {"subject": "001", "label": "core", "label_value": 2, "dice": 0.4, "volume_human_ml": 1.0},
        {"subject": "001", "label": "lesion", "label_value": "1+2", "dice": 0.8, "volume_human_ml": 4.0},
        {"subject": "002", "label": "rim", "label_value": 1, "dice": 0.7, "volume_human_ml": 2.0},
        {"subject": "002", "label": "core", "label_value": 2, "dice": 0.5, "volume_human_ml": 2.0},
        {"subject": "002", "label": "lesion", "label_value": "1+2", "dice": 0.9, "volume_human_ml": 4.0},
    ]
    return write_metrics(pd.DataFrame(rows), tmp_path / "metrics.tsv")


def test_the_whole_structure_rows_are_read(tmp_path: Path) -> None:
    metrics = _table(tmp_path)
    assert _labelled(metrics, "lesion") == {"001": (0.8, 4.0), "002": (0.9, 4.0)}
    assert _labelled(metrics) == {"001": (0.6, 3.0), "002": (0.7, 2.0)}  # no label: each subject's first row
    with pytest.raises(DataError, match=r"no rows of label 'tumour' \(found \['core', 'lesion', 'rim'\]\)"):
        _labelled(metrics, "tumour")
