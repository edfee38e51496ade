"""The software and machine a run used, for the run manifest (:mod:`medpipe.audit.manifest`).

Installed Python distributions and their versions, the git state of the code, and the hardware: OS, Python,
CPU model, GPU model, driver, CUDA and cuDNN versions.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import medpipe

logger = logging.getLogger(__name__)


def all_package_versions() -> dict[str, str]:
    """Name -> version of every installed Python distribution (the first found of duplicates)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in out:
            out[name] = dist.version
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def package_version(packages: Mapping[str, str], name: str) -> str | None:
    """Version of ``name`` in ``packages`` compared by normalised name (PEP 503)."""

    def norm(n: str) -> str:
        return re.sub(r"[-_.]+", "-", n).lower()

    wanted = norm(name)
    return next((v for k, v in packages.items() if norm(k) == wanted), None)


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding medpipe; ``"unknown"`` without git."""
    where = Path(path) if path is not None else Path(medpipe.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": head, "dirty": bool(status.strip())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (macOS, some containers): the platform module's answer below
        pass
    return platform.processor() or "unknown"


def gpu_info() -> dict[str, Any] | None:
    """GPU model, driver, CUDA and cuDNN versions through torch; ``None`` without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    driver = "unknown"
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        logger.info("nvidia-smi not available: GPU driver version unknown")
    return {
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def hardware_info() -> dict[str, Any]:
    """OS, Python, CPU and GPU of the machine writing the manifest (no host name)."""
    return {
        "os": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_info(),
    }
