"""Seeding, thread pinning, device choice, the environment record results carry, and run provenance.

Two records, kept apart on purpose. record() is what a number depends on (versions, device, CPU, thread
count): it goes into outputs DVC caches or git tracks, and is the same on every run on one machine.
provenance() adds what changes from run to run (commit, host, start time, wall times): it is written by
write_provenance() under artifacts/provenance/, which no stage depends on, so a new commit or a slower
run never makes a cached output out of date.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EnvParams:
    threads: int = 2  # fixed count: CPU float sums are bitwise repeatable only at one thread count
    deterministic: bool = True  # torch.use_deterministic_algorithms; cuDNN benchmark off
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when present
    # Subnormal floats flushed to zero on the CPU: unnormalised MFCCs (|x| up to ~900) saturate the LSTM's
    # gates, and its backward through underflowing gradients ran 5.6x slower on an Intel Xeon (docs/fidelity.md).
    flush_denormal: bool = True


def configure(params: EnvParams) -> None:
    """Pins thread counts and deterministic algorithms; call once per process, before work."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(params.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(params.threads))
    torch.set_num_threads(params.threads)
    torch.set_flush_denormal(params.flush_denormal)  # no effect where the CPU cannot (then it returns False)
    # torch's default, full-precision fp32 matmuls on CUDA: importing SpeechBrain switches TF32 on for the
    # whole process (its `allow_tf32` quirk), and no number may depend on which modules were imported.
    torch.backends.cuda.matmul.allow_tf32 = False
    if params.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        deterministic_algorithms(torch)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def deterministic_algorithms(torch, compiler: bool = False) -> None:
    """Switches deterministic algorithms on, without importing the compiler unless it is already loaded.

    torch 2.14's `use_deterministic_algorithms` imports `torch._inductor.config` to set inductor's own flag,
    which loads inductor and dynamo: 4.0 s of a 4.9 s start-up, measured, in every stage and worker process.
    The kernel flag is the same either way; inductor's flag matters only to torch.compile, so it is set
    through the public call whenever the compiler is loaded or about to be (`compiler`).
    """
    if compiler or "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=False)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=False)


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
    """Returns versions, device, CPU and threads: what a result depends on, the same on every run here."""
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
    }
    if torch.cuda.is_available():
        rec["device"] = "cuda"
        rec["gpu"] = torch.cuda.get_device_name(0)
    return rec


PROVENANCE_DIR = Path("artifacts/provenance")  # git-ignored, outside every DVC output, read by no stage


def light_record() -> dict[str, Any]:
    """Returns what record() can say without importing torch (a stage that never needs it: evaluate)."""
    import importlib.metadata

    return {"python": platform.python_version(), "torch": importlib.metadata.version("torch"),
            "cpu": platform.processor() or platform.machine()}


def provenance(**extra: Any) -> dict[str, Any]:
    """Returns record() plus what differs between runs: commit, host, time written, and `extra` (wall times)."""
    environment = record() if "torch" in sys.modules else light_record()
    return {**environment, "commit": git_commit(), "host": socket.gethostname(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def write_provenance(relative: str | Path, root: Path = PROVENANCE_DIR, **extra: Any) -> Path:
    """Returns the path of <root>/<relative>.json after writing provenance(**extra) there."""
    from sdcaff.files import atomic_path

    path = Path(root) / f"{relative}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(provenance(**extra), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def params_hash(obj: Any) -> str:
    """Returns a short, stable hash of plain data (a params section as a dict)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
