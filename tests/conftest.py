"""Test defaults: CPU only, deterministic, pinned threads, a fresh tmp_path per test."""

from __future__ import annotations

import os
import subprocess

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


@pytest.fixture(scope="module")
def restore_threads():
    """Gives back torch's thread count after a module whose training pinned it from params.yaml env."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Runs the test with tmp_path as the working directory (for stage commands)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# nodeid -> category of every collected test marked `reliability`, for the totals `make reliability` prints.
RELIABILITY: dict[str, str] = {}


def pytest_itemcollected(item):
    mark = item.get_closest_marker("reliability")
    if mark is not None:
        category = mark.args[0] if mark.args else "other"
        # A parametrized case may belong elsewhere than its test: by_param maps a parameter id to a category.
        param_id = getattr(getattr(item, "callspec", None), "id", None)
        RELIABILITY[item.nodeid] = mark.kwargs.get("by_param", {}).get(param_id, category)


def pytest_terminal_summary(terminalreporter):
    outcomes: dict[str, str] = {}
    for key in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(key, []):
            nodeid = getattr(report, "nodeid", None)
            if nodeid in RELIABILITY and outcomes.get(nodeid) not in ("failed", "error"):
                outcomes[nodeid] = key
    if not outcomes:
        return
    table: dict[str, dict[str, int]] = {}
    for nodeid, outcome in outcomes.items():
        row = table.setdefault(RELIABILITY[nodeid], {"tried": 0, "failed": 0, "skipped": 0})
        row["tried"] += 1
        row["failed"] += outcome in ("failed", "error")
        row["skipped"] += outcome == "skipped"
    table["total"] = {k: sum(row[k] for row in table.values()) for k in ("tried", "failed", "skipped")}
    width = max(map(len, ["category", *table]))
    terminalreporter.section("reliability cases")
    terminalreporter.write_line(f"{'category':<{width}} {'tried':>5} {'failed':>6} {'skipped':>7}")
    for category, row in sorted(table.items(), key=lambda item: (item[0] == "total", item[0])):
        terminalreporter.write_line(f"{category:<{width}} {row['tried']:>5} {row['failed']:>6} {row['skipped']:>7}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (tests/slurm_cluster.py) for the session; skips where none can start."""
    import slurm_cluster as cluster_module

    reason = cluster_module.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = cluster_module.Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The session's SLURM cluster, with SLURM_CONF set so that sbatch, squeue and submitit reach it."""
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    yield slurm_cluster
    subprocess.run(["scancel", "--user=root"], env=slurm_cluster.env, capture_output=True, check=False)
