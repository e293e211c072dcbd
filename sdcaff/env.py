"""Seeding, thread pinning, device choice and the environment record every result carries."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import random
import subprocess
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EnvParams:
    threads: int = 2  # fixed count: CPU float sums are bitwise repeatable only at one thread count
    deterministic: bool = True  # torch.use_deterministic_algorithms; cuDNN benchmark off
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when present


def configure(params: EnvParams) -> None:
    """Pins thread counts and deterministic algorithms; call once per process, before work."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(params.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(params.threads))
    torch.set_num_threads(params.threads)
    # torch's default, full-precision fp32 matmuls on CUDA: importing SpeechBrain switches TF32 on for the
    # whole process (its `allow_tf32` quirk), and no number may depend on which modules were imported.
    torch.backends.cuda.matmul.allow_tf32 = False
    if params.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device(choice: str = "auto") -> "torch.device":
    """Returns the torch device for `choice` (auto, cpu or cuda)."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        from sdcaff.errors import SdcaffError

        raise SdcaffError("device 'cuda' requested but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Returns the current git commit (with -dirty when the tree has changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record() -> dict[str, Any]:
    """Returns versions, device and commit: the provenance stored beside every result."""
    import torch

    rec: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": "cpu",
        "gpu": None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "commit": git_commit(),
    }
    if torch.cuda.is_available():
        rec["device"] = "cuda"
        rec["gpu"] = torch.cuda.get_device_name(0)
    return rec


def params_hash(obj: Any) -> str:
    """Returns a short, stable hash of plain data (a params section as a dict)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
