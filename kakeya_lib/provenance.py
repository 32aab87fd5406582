"""Provenance recorded next to every result: code version, environment, machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from .paths import REPO_ROOT

_PACKAGES = ("numpy", "scipy", "torch", "transformers", "cupy-cuda13x")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")


def git_state() -> dict[str, Any]:
    """``{"sha": ..., "dirty": bool}`` of the repository, or ``{"sha": None}`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, check=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": dirty}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def threads() -> dict[str, Any]:
    """Thread counts that can change float results in the last digits: torch's intra-op pool (if
    torch is loaded) and the BLAS/OpenMP variables of the environment."""
    out: dict[str, Any] = {k: os.environ.get(k) for k in _THREAD_VARS}
    torch = sys.modules.get("torch")
    out["torch_intraop"] = torch.get_num_threads() if torch is not None else None
    return out


def collect(**extra: Any) -> dict[str, Any]:
    """Everything needed to tell where a number came from; ``extra`` adds run parameters."""
    return {
        "git": git_state(),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    # timings taken on a busy machine are slow; the load when the run started says so
                    "load_avg_1_5_15m": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None},
        "threads": threads(),
        **extra,
    }
