"""Patch centres: with several classes every foreground class is sampled as often (nnU-Net's oversampling)."""

from __future__ import annotations

import copy

import numpy as np

from medpipe.core.geometry import Geometry
from medpipe.segment.data import Case, patch_dataset
from tests.segment.conftest import TINY


def _case(core: bool = True) -> Case:
    label = np.zeros((1, 40, 40, 40), np.uint8)
    label[0, 5:35, 5:35, 5:35] = 1  # a large rim class
    if core:
        label[0, 18:20, 18:20, 18:20] = 2  # a core of 8 voxels (0.03 % of the structure)
    image = np.random.default_rng(0).standard_normal((1, 40, 40, 40)).astype(np.float32)
    return Case("S01", image, label, Geometry(shape=(40, 40, 40), affine=np.eye(4)))


def _centre_classes(n_classes: int, draws: int = 300, core: bool = True) -> np.ndarray:
    settings = copy.deepcopy(TINY)
    settings["num_classes"] = n_classes
    settings["train"].update(patch_size=[4, 4, 4], foreground_ratio=0.8, augment=False)
    case = _case(core)
    if n_classes == 2:
        case = Case(case.subject, case.image, (case.label > 0).astype(np.uint8), case.geometry)
    dataset = patch_dataset([case], settings, with_sdm=False)
    dataset.transform.set_random_state(3)
    # a 4-voxel patch around its centre: the class of its middle voxel is the class it was centred on
    return np.array([int(dataset[0][0]["label"][0, 2, 2, 2]) for _ in range(draws)])


def test_every_class_is_the_centre_of_its_share_of_patches() -> None:
    centres = _centre_classes(3)
    shares = np.bincount(centres, minlength=3) / len(centres)
    # 0.8 on the structure split over rim and core: about 0.4 each, though the core is 8 voxels of 27,000
    assert 0.3 < shares[2] < 0.5 and 0.3 < shares[1] < 0.5 and 0.1 < shares[0] < 0.3, shares
    one = _centre_classes(2)  # one structure: the positive share lands where the voxels are
    assert 0.7 < np.mean(one == 1) < 0.9
    missing = np.bincount(_centre_classes(3, core=False), minlength=3) / 300  # no core: its share goes elsewhere
    assert missing[2] == 0 and missing[1] > 0.5
