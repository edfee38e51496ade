"""JSON sidecars: how stages tell each other what they produced.

Every image a stage writes (``X.nii.gz``) gets ``X.json`` beside it; other files (``X.pt``,
``X.tsv``) get ``X.pt.json``. A sidecar records the stage, subject, parameters, the geometry of
the image, the sha256 of every input file and the versions of the software used. It holds no
timestamps and no absolute paths so that re-runs are byte-identical and no user path leaks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from medpipe import __version__
from medpipe.core.errors import GeometryError, MedpipeError
from medpipe.core.geometry import Geometry, check_same_grid
from medpipe.core.io import atomic_path

logger = logging.getLogger(__name__)

#: Packages whose versions are recorded in every sidecar.
CORE_PACKAGES = ("numpy", "nibabel", "SimpleITK")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` when missing)."""
    out: dict[str, str] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sidecar_path(path: str | Path) -> Path:
    """Sidecar location of an output: ``X.nii.gz -> X.json``, ``X.nii -> X.json``, else ``X.ext.json``."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_name(name + ".json")


def _display_path(path: str | Path) -> str:
    """Path as recorded: relative to the working directory when possible (no user directories)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def write_json(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``data`` as sorted, indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def write_sidecar(
    output: str | Path,
    *,
    stage: str,
    subject: str | None = None,
    inputs: Iterable[str | Path] = (),
    parameters: Mapping[str, Any] | None = None,
    geometry: Geometry | None = None,
    packages: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the sidecar of ``output`` and return its path.

    Parameters
    ----------
    output
        The file the sidecar describes.
    stage
        Pipeline stage (``convert``, ``n4``, ...).
    subject
        Subject ID from the subject sheet (never a DICOM patient name or ID).
    inputs
        Files the output was made from; their sha256 is recorded.
    parameters
        Settings that determined the output.
    geometry
        Grid of the output when it is an image.
    packages
        Extra packages whose versions matter for this output (besides :data:`CORE_PACKAGES`).
    extra
        Further stage-specific, JSON-serialisable facts.
    """
    record: dict[str, Any] = {
        "medpipe_version": __version__,
        "stage": stage,
        "subject": subject,
        "output": Path(output).name,
        "inputs": [{"path": _display_path(p), "sha256": sha256_file(p)} for p in inputs],
        "parameters": dict(parameters or {}),
        "software": package_versions([*CORE_PACKAGES, *packages]),
    }
    if geometry is not None:
        record["geometry"] = geometry.to_dict()
    if extra:
        record.update(dict(extra))
    return write_json(record, sidecar_path(output))


def read_sidecar(output: str | Path, *, subject: str | None = None) -> dict[str, Any]:
    """Read the sidecar of ``output``; raise :class:`MedpipeError` naming the file when absent."""
    sc = sidecar_path(output)
    if not sc.exists():
        raise MedpipeError(
            f"sidecar {sc.name} is missing; re-run the stage that made this file", subject=subject, path=output
        )
    data: dict[str, Any] = json.loads(sc.read_text())
    return data


def check_against_sidecar(output: str | Path, actual: Geometry, *, subject: str | None = None) -> None:
    """Raise :class:`GeometryError` when an image no longer has the geometry its sidecar records."""
    data = read_sidecar(output, subject=subject)
    if "geometry" not in data:
        raise GeometryError("sidecar records no geometry", subject=subject, path=output)
    check_same_grid(
        actual, Geometry.from_dict(data["geometry"]), what="image vs its sidecar", subject=subject, path=output
    )
