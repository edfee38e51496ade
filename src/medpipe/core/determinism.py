"""Switches that make re-runs bit-identical.

ITK (and so ANTs) is multi-threaded with a non-deterministic reduction order unless
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` is set *before* the process starts; the Snakefile
exports it for every job when ``deterministic: true``. ANTs also needs its random sampling seeded.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np

logger = logging.getLogger(__name__)

ITK_THREADS_VAR = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


def itk_single_threaded() -> bool:
    """True when the environment pins ITK to one thread."""
    return os.environ.get(ITK_THREADS_VAR) == "1"


def ants_deterministic(seed: int) -> None:
    """Make ANTs registration and N4 deterministic for ``seed``.

    Calls ``ants.config.set_ants_deterministic(True, seed)`` and warns when ITK is not pinned to
    one thread (which only the environment, set before Python starts, can do).
    """
    import ants

    config = getattr(ants, "config", None)
    setter = getattr(config, "set_ants_deterministic", None)
    if setter is not None:
        setter(True, int(seed))
    else:  # older antspyx: the same switch through environment variables
        os.environ["ANTS_RANDOM_SEED"] = str(int(seed))
    if not itk_single_threaded():
        logger.warning("%s is not 1: ANTs results may differ between runs", ITK_THREADS_VAR)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; in deterministic mode force deterministic torch kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # torch is optional for non-learning stages
        return
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def export_job_environment(deterministic: bool) -> dict[str, str]:
    """Set, in this (Snakemake) process, the variables every job must inherit; return them.

    Jobs are new Python processes (also on SLURM, whose ``sbatch`` exports the submitting
    environment), so variables that must be set before Python or ITK start are exported here,
    once, when the workflow is parsed.
    """
    values = {ITK_THREADS_VAR: "1", "PYTHONHASHSEED": "0"} if deterministic else {}
    os.environ.update(values)
    return values
