"""medpipe.labeling.campaign: the campaign read from the config and the sheet, and each round's training settings."""

from __future__ import annotations

import pytest

from medpipe.core.config import with_defaults
from medpipe.core.errors import ConfigError
from medpipe.labeling.campaign import campaign_from_config, round_training_settings

ORDER = ["s05", "s01", "s03", "s02", "s04", "t01"]
SETS = {**{s: "train" for s in ORDER[:5]}, "t01": "test"}


def _campaign(**labeling):
    cfg = with_defaults({"rounds": 2, **labeling}, "labeling")
    return campaign_from_config(cfg, sheet_order=ORDER, labelled=ORDER, sets=SETS, seed=3)


def test_initial_set_pool_and_held_out_follow_the_sheet():
    c = _campaign(initial_size=2)
    assert c.initial == ("s05", "s01")  # sheet order, not sorted
    assert c.candidates == ("s03", "s02", "s04")
    assert c.held_out == ("t01",)  # labelled test subjects: scored every round, never trained on
    assert str(c.correction_file(1, "s02")) == "corrections/round-1/sub-s02_mask.nii.gz"
    named = _campaign(initial=["s04"], batches=[["s02", "s03"]])
    assert named.initial == ("s04",) and named.explicit_batch(0) == ["s02", "s03"] and named.explicit_batch(1) == []


@pytest.mark.parametrize(
    ("labeling", "message"),
    [
        ({"initial": ["t01"]}, r"\['t01'\] are not labelled training subjects"),
        ({"initial": ["nobody"]}, r"\['nobody'\] are not labelled training subjects"),
        ({"initial": ORDER[:5]}, "every training subject is in the initial set"),
        ({"initial": ["s01"], "batches": [["s01"]]}, r"batches\[0\]: \['s01'\] are not candidates"),
        ({"initial": ["s01"], "batches": [["s02"], ["s02", "s03"]]}, r"batches\[1\]: \['s02'\] were already selected"),
    ],
)
def test_bad_campaigns_name_the_subjects(labeling, message):
    with pytest.raises(ConfigError, match=message):
        _campaign(**labeling)


def test_simulation_needs_a_label_for_every_candidate():
    cfg = with_defaults({"rounds": 1, "mode": "simulate", "initial": ["s05"]}, "labeling")
    with pytest.raises(ConfigError, match=r"simulate: \['s02'\] have no label"):
        campaign_from_config(cfg, sheet_order=ORDER, labelled=["s05", "s01", "s03", "s04"], sets=SETS, seed=0)


def test_later_rounds_fine_tune_from_the_previous_model_with_their_own_schedule():
    seg = with_defaults({"train": {"epochs": 40, "learning_rate": 0.01}}, "segmentation")
    lab = with_defaults({"rounds": 2, "fine_tune": {"epochs": 5, "learning_rate": 0.001}}, "labeling")
    first = round_training_settings(seg, lab["fine_tune"], None)
    assert first == seg and first is not seg
    later = round_training_settings(seg, lab["fine_tune"], "results/labeling/round-0/model.pt")
    assert later["train"]["init_checkpoint"] == "results/labeling/round-0/model.pt"
    assert (later["train"]["epochs"], later["train"]["learning_rate"]) == (5, 0.001)
    assert seg["train"]["init_checkpoint"] is None  # the segmentation settings are not changed
    keep = round_training_settings(seg, with_defaults({"rounds": 2}, "labeling")["fine_tune"], "m.pt")
    assert (keep["train"]["epochs"], keep["train"]["learning_rate"]) == (40, 0.01)
