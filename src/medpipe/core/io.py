"""Reading and writing images; the only module that knows file formats and toolkit conventions.

* NIfTI through nibabel (RAS+ world coordinates, array indexed ``[i, j, k]``).
* SimpleITK and ANTs images are converted in memory; both use LPS world coordinates. Images that a
  tool needs as SimpleITK images (pyradiomics) are read with :func:`read_sitk`; their RAS+ grid is
  :func:`sitk_geometry` (the LPS -> RAS step is :func:`_sitk_ras_affine`, shared with :func:`sitk_to_nib`).
* Tables are TSV (:func:`write_tsv`: missing values ``NA``, full float precision, unless a caller
  names another representation) and figures PNG (:func:`save_png`).
* Every write is atomic (temporary file + rename) so a killed job never leaves a half-written
  output, and NIfTI header text fields (``descrip``, ``aux_file``, ``intent_name``, ``db_name``)
  are blanked so no free text (possibly PHI) survives in an output header.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from medpipe.core.errors import DataError
from medpipe.core.geometry import LPS_RAS, Geometry, check_same_grid, geometry_of

if TYPE_CHECKING:
    import ants
    import pandas as pd
    import SimpleITK as sitk
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A write killed half-way (kill -9) leaves its temporary file; the job owning ``path`` is its
    # only writer, so leftovers of earlier attempts can be removed safely.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
        stale.unlink(missing_ok=True)
    sfx = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=sfx, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: Missing values in the pipeline's TSV tables.
NA_REP = "NA"


def read_tsv(path: str | Path, *, dtype: Mapping[str, type] | None = None) -> pd.DataFrame:
    """A table as :func:`write_tsv` wrote it: :data:`NA_REP` is the only missing value.

    Parameters
    ----------
    path
        The TSV file.
    dtype
        Column types to keep (e.g. ``{"subject": str}`` so that IDs such as ``001`` stay text).
    """
    import pandas as pd

    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[NA_REP], dtype=dict(dtype or {}))


def read_feature_table(path: str | Path) -> pd.DataFrame:
    """The long radiomics feature table (``results/radiomics/features.tsv``) as the radiomics stage wrote it.

    Subject IDs and IBSI codes stay text. Read by the stats and signature stages (one reader for the one
    writer, :func:`medpipe.radiomics.extract.collect`).
    """
    return read_tsv(path, dtype={"subject": str, "region": str, "ibsi_code": str, "ibsi2_code": str})


def write_tsv(table: pd.DataFrame, path: str | Path, *, na_rep: str = NA_REP, float_format: str | None = None) -> Path:
    """Write a table as TSV atomically (byte-identical re-runs).

    Parameters
    ----------
    table
        The table; its index is not written.
    path
        Destination.
    na_rep
        Text of a missing value: :data:`NA_REP` unless a table has its own documented convention
        (the evaluation metrics write ``NaN``, the failure list an empty field).
    float_format
        ``printf`` format of floats; ``None`` writes full precision (shortest repr).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep=na_rep, float_format=float_format)
    return path


def save_png(fig: Figure, path: str | Path, *, dpi: float | None = None) -> Path:
    """Save a matplotlib figure as PNG atomically, without the software tag (byte-identical re-runs); close it.

    Parameters
    ----------
    fig
        The figure (closed afterwards).
    path
        Destination.
    dpi
        Resolution; ``None`` keeps the figure's own.
    """
    path = Path(path)
    resolution: dict[str, Any] = {} if dpi is None else {"dpi": dpi}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None}, **resolution)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def stored_voxels(img: nib.Nifti1Image) -> npt.NDArray[Any]:
    """Voxel values with the file's scaling (scl_slope / scl_inter) applied; unscaled images keep their stored dtype.

    The scaling is read from the array proxy: once nibabel has loaded a file it moves scl_slope / scl_inter
    there and ``img.header.get_slope_inter()`` returns ``(None, None)``, so reading the header would drop a CT's
    rescale intercept (dcm2niix stores unsigned CT pixels with ``scl_inter = -1000`` or ``-1024``).
    """
    proxy: Any = img.dataobj
    if not nib.is_proxy(proxy):  # an image made in memory holds its values as they are
        return np.asarray(proxy)
    if proxy.slope == 1.0 and proxy.inter == 0.0:
        return np.asarray(proxy.get_unscaled())
    return np.asarray(proxy, dtype=np.float64).astype(np.float32)


def load_nifti(path: str | Path, *, subject: str | None = None) -> nib.Nifti1Image:
    """Load a NIfTI image, raising :class:`DataError` naming the file when it cannot be read."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several unrelated exception types
        raise DataError(f"cannot read NIfTI image: {exc}", subject=subject, path=path) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(f"expected a NIfTI image, got {type(img).__name__}", subject=subject, path=path)
    return img


def scrub_header(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Blank free-text NIfTI header fields in place and return the image."""
    hdr = img.header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        if field in hdr:
            hdr[field] = b""
    return img


def save_nifti(
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.floating[Any]],
    path: str | Path,
    *,
    dtype: npt.DTypeLike | None = None,
) -> Path:
    """Write ``data`` with ``affine`` as a compressed NIfTI, atomically, with a scrubbed header.

    Parameters
    ----------
    data
        Array indexed ``[i, j, k(, c)]``.
    affine
        4x4 voxel-to-RAS+ affine in mm.
    path
        Destination (``.nii.gz`` or ``.nii``).
    dtype
        Stored data type; defaults to the array's.
    """
    arr = np.asarray(data if dtype is None else np.asarray(data).astype(dtype))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(arr.dtype)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    scrub_header(img)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    logger.debug("wrote %s %s %s", path, arr.shape, arr.dtype)
    return path


def copy_file(source: str | Path, path: str | Path) -> Path:
    """Copy ``source`` to ``path`` byte for byte, atomically (a pass-through output keeps its input's bytes)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    logger.debug("copied %s to %s", source, path)
    return path


def save_like(
    data: npt.NDArray[Any], reference: Geometry, path: str | Path, *, dtype: npt.DTypeLike | None = None
) -> Path:
    """Write ``data`` on the grid ``reference`` (shapes must agree)."""
    if tuple(np.shape(data)[:3]) != tuple(reference.shape[:3]):
        raise DataError(f"array shape {np.shape(data)} does not fit grid {reference.shape}", path=path)
    return save_nifti(data, reference.affine, path, dtype=dtype)


def save_checked(
    data: npt.NDArray[Any],
    grid: Geometry,
    path: str | Path,
    *,
    dtype: npt.DTypeLike,
    what: str,
    subject: str | None = None,
) -> Path:
    """Write a stage's output on ``grid`` and check, from the written file, that it landed there.

    The stage-boundary check of every image-writing stage: orientation, spacing and origin of the file
    as a reader will see it (:func:`medpipe.core.geometry.check_same_grid`, message ``what``).
    """
    save_like(data, grid, path, dtype=dtype)
    check_same_grid(geometry_of(load_nifti(path, subject=subject)), grid, what=what, subject=subject, path=path)
    return Path(path)


# --- SimpleITK -----------------------------------------------------------------------------------


def nib_to_sitk(img: nib.Nifti1Image, dtype: npt.DTypeLike | None = None) -> sitk.Image:
    """Convert a 3D nibabel image to SimpleITK (same world coordinates)."""
    import SimpleITK as sitk

    data = np.asarray(img.dataobj)
    if dtype is not None:
        data = data.astype(dtype)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    m = LPS_RAS @ np.asarray(img.affine, dtype=np.float64)
    spacing = np.sqrt((m[:3, :3] ** 2).sum(axis=0))
    out.SetSpacing([float(s) for s in spacing])
    out.SetDirection([float(v) for v in (m[:3, :3] / spacing).ravel()])
    out.SetOrigin([float(v) for v in m[:3, 3]])
    return out


def _sitk_ras_affine(img: sitk.Image) -> npt.NDArray[np.float64]:
    """Voxel-to-RAS+ affine of a 3D SimpleITK image (whose direction, spacing and origin are LPS)."""
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = direction * np.asarray(img.GetSpacing())
    m[:3, 3] = img.GetOrigin()
    return np.asarray(LPS_RAS @ m, dtype=np.float64)


def sitk_to_nib(img: sitk.Image) -> nib.Nifti1Image:
    """Convert a 3D SimpleITK image to nibabel (same world coordinates)."""
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    return nib.Nifti1Image(data, _sitk_ras_affine(img))


def sitk_geometry(img: sitk.Image) -> Geometry:
    """:class:`Geometry` (shape and RAS+ affine) of a 3D SimpleITK image."""
    size = img.GetSize()
    return Geometry((int(size[0]), int(size[1]), int(size[2])), _sitk_ras_affine(img))


def read_sitk(path: str | Path, *, subject: str | None = None) -> sitk.Image:
    """Read a 3D image (NIfTI, NRRD, ...) with SimpleITK, raising :class:`DataError` naming the file.

    Parameters
    ----------
    path
        Image file.
    subject
        Subject ID, named in errors.

    Returns
    -------
    SimpleITK.Image
        The image in SimpleITK's LPS world coordinates (:func:`sitk_geometry` gives its RAS+ grid).
    """
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"cannot read image: {exc}", subject=subject, path=path) from exc
    if img.GetDimension() != 3:
        raise DataError(f"expected a 3D image, got {img.GetDimension()}D", subject=subject, path=path)
    return img


# --- ANTs ----------------------------------------------------------------------------------------


def nib_to_ants(img: nib.Nifti1Image) -> ants.ANTsImage:
    """Convert a 3D nibabel image to an ANTs image (float32, same world coordinates)."""
    import ants

    m = LPS_RAS @ np.asarray(img.affine, dtype=np.float64)
    spacing = np.sqrt((m[:3, :3] ** 2).sum(axis=0))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return ants.from_numpy(
        data,
        origin=[float(v) for v in m[:3, 3]],
        spacing=[float(s) for s in spacing],
        direction=m[:3, :3] / spacing,
    )


def ants_to_nib(img: ants.ANTsImage) -> nib.Nifti1Image:
    """Convert a 3D ANTs image to nibabel (same world coordinates)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(img.direction, dtype=np.float64) * np.asarray(img.spacing)
    m[:3, 3] = img.origin
    return nib.Nifti1Image(img.numpy(), LPS_RAS @ m)
