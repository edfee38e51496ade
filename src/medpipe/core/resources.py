"""Memory requests that grow with the images a job reads (Snakemake ``resources: mem_mb``).

A rule declares a floor (``base_mb``, what the demo-sized images need with room to spare) and a slope
(``per_image_mib``: MiB of job memory per MiB of its input images held as float32). The image size
comes from the NIfTI headers of the job's inputs (no voxel data is read), so a 512 x 512 x 300 CT asks
for more than a 2 mm brain. Inputs that do not exist yet (while Snakemake plans the DAG) or are not
NIfTI count as zero: Snakemake re-evaluates resources right before a job starts, when its inputs are
there. Each retry (``attempt``) multiplies the request, so a job killed for memory on SLURM comes back
with more.

The slopes in ``rules/*.smk`` were set from the peak RSS of the demo's jobs (benchmarks/results/
scale_memory_demo.md): a fixed cost of the interpreter and libraries (``overhead_mb``) plus what the
stage's algorithm keeps per voxel (N4 and skull stripping several float copies, radiomics a wavelet
decomposition of the ROI, training its cached cases).
"""

from __future__ import annotations

import functools
import logging
import math
import stat
from collections.abc import Iterable
from pathlib import Path

from medpipe.core.errors import DataError
from medpipe.core.io import load_nifti

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_FLOAT32_BYTES = 4


def image_mib(paths: Iterable[str | Path]) -> float:
    """Sum over the existing NIfTI files in ``paths`` of their voxel data size as float32, in MiB.

    Only headers are read. Missing files, folders and other formats contribute nothing; an
    unreadable header is logged and counts as zero (the job itself will report the broken file).
    """
    total = 0.0
    for raw in paths:
        path = Path(raw)
        if not path.name.endswith(_NIFTI_SUFFIXES):
            continue
        try:
            info = path.stat()
        except OSError:  # not made yet
            continue
        if stat.S_ISREG(info.st_mode):
            total += _voxel_mib(str(path), info.st_mtime_ns, info.st_size)
    return total


@functools.lru_cache(maxsize=65536)
def _voxel_mib(path: str, mtime_ns: int, size: int) -> float:
    """float32 MiB of one NIfTI's voxels from its header; cached per file version (Snakemake asks
    for the same file once per job that reads it, while it plans the DAG)."""
    del mtime_ns, size  # part of the cache key only
    try:
        shape = load_nifti(path).shape
    except DataError as exc:  # a bad header must not stop the scheduler
        logger.warning("no memory estimate from %s: %s", path, exc)
        return 0.0
    return math.prod(int(n) for n in shape) * _FLOAT32_BYTES / 2**20


def estimate_mem_mb(
    paths: Iterable[str | Path],
    *,
    base_mb: int,
    per_image_mib: float,
    attempt: int = 1,
    overhead_mb: int = 500,
) -> int:
    """Memory request of a job: ``max(base_mb, overhead_mb + per_image_mib * image MiB) * attempt``.

    Parameters
    ----------
    paths
        The job's input files.
    base_mb
        Floor of the request (MB).
    per_image_mib
        MiB of memory per MiB of float32 input image data.
    attempt
        Snakemake's attempt counter (1 for the first try).
    overhead_mb
        Fixed cost of the job's process (interpreter, libraries).

    Returns
    -------
    int
        The request in MB, rounded up.
    """
    if base_mb <= 0 or per_image_mib < 0 or attempt < 1:
        raise ValueError(
            f"memory estimate needs base_mb > 0, per_image_mib >= 0 and attempt >= 1, "
            f"got {base_mb}, {per_image_mib}, {attempt}"
        )
    need = max(float(base_mb), overhead_mb + per_image_mib * image_mib(paths))
    return math.ceil(need * attempt)
