"""Test defaults: CPU only, deterministic, pinned threads, a fresh tmp_path per test."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    no_gpu = pytest.mark.skip(reason="marked gpu; no CUDA device here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_gpu)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs the test with tmp_path as the working directory (for stage commands)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
