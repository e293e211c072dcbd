"""Cached outputs are byte-stable: two clones at different commits recompute the same md5s in dvc.lock.

A stage output that held the commit, a time or the host would change its checksum on every commit, and
every stage after it would be out of date: a committed dvc.lock could never be matched by a fresh clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The deterministic stages up to one feature set, on a small synthetic IEMOCAP (~130 wavs).
TARGET = "features@iemocap"
STAGES = ("synth@iemocap", "fingerprint@iemocap", "manifest@iemocap", "features@iemocap")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _clone(tmp: Path, name: str) -> Path:
    """Returns a clone of the committed repository with a small params.yaml laid over its own."""
    clone = tmp / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["synth"]["iemocap_scale"] = 0.013  # a tenth of the default corpus: seconds, not minutes
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return clone


def _repro(clone: Path) -> dict[str, dict]:
    """Returns {stage: {path: md5}} of the outputs dvc.lock records after `dvc repro TARGET` in `clone`."""
    venv_bin = Path(sys.executable).parent
    environ = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(clone)}
    for key in ("SDCAFF_IEMOCAP", "SDCAFF_MSP_IMPROV", "SDCAFF_PARAMS"):
        environ.pop(key, None)
    run = subprocess.run([str(venv_bin / "dvc"), "repro", "--quiet", TARGET], cwd=clone, env=environ,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    return {stage: {out["path"]: out["md5"] for out in lock[stage]["outs"]} for stage in STAGES}


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a git checkout of the project to clone")
def test_two_clones_at_different_commits_record_the_same_checksums(tmp_path):
    first, second = _clone(tmp_path, "a"), _clone(tmp_path, "b")
    # The second clone is one commit ahead, as after a README edit.
    (second / "README.md").write_text((second / "README.md").read_text() + "\nAn edit.\n")
    _git(second, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "an edit")
    assert _git(first, "rev-parse", "HEAD") != _git(second, "rev-parse", "HEAD")
    a, b = _repro(first), _repro(second)
    assert a == b
    assert {"artifacts/features/iemocap.pt", "results/features/iemocap.json"} <= set(a["features@iemocap"])
    # Each clone wrote its own provenance (commit, wall time) where no stage reads it.
    commits = [yaml.safe_load((c / "artifacts/provenance/features/iemocap.json").read_text())["commit"]
               for c in (first, second)]
    assert commits[0] != commits[1]
