"""Tests of medpipe.core.geometry."""

from __future__ import annotations

import numpy as np
import pytest

from medpipe.core.errors import DataError, GeometryError
from medpipe.core.geometry import Geometry, check_finite, check_same_grid, grid_differences


def _geom(shape=(10, 12, 8), spacing=(1.0, 1.5, 3.0), origin=(0.0, 0.0, 0.0)) -> Geometry:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return Geometry(shape, aff)


def test_properties_and_roundtrip() -> None:
    g = _geom()
    assert g.spacing == (1.0, 1.5, 3.0)
    assert g.orientation == "RAS"
    assert Geometry.from_dict(g.to_dict()).to_dict() == g.to_dict()


def test_same_grid_passes_within_tolerance() -> None:
    check_same_grid(_geom(), _geom(origin=(0.0005, 0, 0)), what="a vs b")


def test_origin_shift_is_reported_in_mm() -> None:
    problems = grid_differences(_geom(), _geom(origin=(0.0, 2.0, 0.0)))
    assert any("origin" in p for p in problems)
    with pytest.raises(GeometryError, match=r"subject s1.*file m.nii.gz.*origin"):
        check_same_grid(_geom(), _geom(origin=(0, 2.0, 0)), what="mask vs image", subject="s1", path="m.nii.gz")


def test_flip_is_a_different_grid() -> None:
    flipped = _geom().affine.copy()
    flipped[0, 0] = -1
    flipped[0, 3] = 9
    problems = grid_differences(_geom(), Geometry((10, 12, 8), flipped))
    assert any("orientation RAS != LAS" in p for p in problems)


def test_shape_mismatch() -> None:
    assert grid_differences(_geom(), _geom(shape=(10, 12, 9))) == ["shape (10, 12, 8) != (10, 12, 9)"]


def test_check_finite_counts_bad_voxels() -> None:
    a = np.zeros((3, 3, 3))
    a[0, 0, 0] = np.nan
    a[1, 1, 1] = np.inf
    with pytest.raises(DataError, match="2 voxels"):
        check_finite(a, subject="x")
