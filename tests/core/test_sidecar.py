"""Tests of medpipe.core.sidecar."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medpipe.core.errors import GeometryError, MedpipeError
from medpipe.core.geometry import Geometry
from medpipe.core.sidecar import check_against_sidecar, read_sidecar, sidecar_path, write_sidecar


def test_sidecar_path_rules() -> None:
    assert sidecar_path("a/b.nii.gz") == Path("a/b.json")
    assert sidecar_path("a/b.nii") == Path("a/b.json")
    assert sidecar_path("a/model.pt") == Path("a/model.pt.json")


def test_sidecar_records_inputs_and_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc")
    out = tmp_path / "out.nii.gz"
    geom = Geometry((2, 3, 4), np.diag([1.0, 2.0, 3.0, 1.0]))
    sc = write_sidecar(out, stage="n4", subject="s1", inputs=[src], parameters={"k": 1}, geometry=geom)
    first = sc.read_bytes()
    data = json.loads(first)
    assert data["inputs"] == [{"path": "in.bin", "sha256": hashlib.sha256(b"abc").hexdigest()}]
    assert data["geometry"]["spacing_mm"] == [1.0, 2.0, 3.0]
    assert str(tmp_path) not in first.decode()  # no absolute paths
    write_sidecar(out, stage="n4", subject="s1", inputs=[src], parameters={"k": 1}, geometry=geom)
    assert sc.read_bytes() == first  # byte-identical re-run: no timestamps
    check_against_sidecar(out, geom)
    with pytest.raises(GeometryError, match="sidecar"):
        check_against_sidecar(out, Geometry((2, 3, 5), geom.affine), subject="s1")


def test_missing_sidecar_is_named(tmp_path: Path) -> None:
    with pytest.raises(MedpipeError, match=r"x\.json is missing"):
        read_sidecar(tmp_path / "x.nii.gz", subject="s2")
