"""docs/adding-a-model.md, run as written: one new file and params entries; DVC keeps every other stage."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import fake_study
from sdcaff import cli, train, units

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "adding-a-model.md"

# Training pins torch's thread count from params.yaml env: restore it for later test modules.
pytestmark = pytest.mark.usefixtures("restore_threads")


def worked_example() -> tuple[str, str, dict]:
    """Returns the doc's model path, its source and its params entries."""
    text = DOC.read_text(encoding="utf-8")
    (path, source), = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", text, re.S)
    (entries,) = re.findall(r"<!-- params -->\n```yaml\n(.*?)```", text, re.S)
    return path, source, yaml.safe_load(entries)


def merge(base: dict, overrides: dict) -> dict:
    return train.merge(base, overrides)


def dvc(root: Path, *args: str) -> str:
    """Returns the output of `dvc ARGS` run in `root` with this checkout's code first on the import path."""
    venv_bin = Path(sys.executable).parent
    environ = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root)}
    run = subprocess.run([str(venv_bin / "dvc"), *args], cwd=root, env=environ, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def changed_stages(root: Path) -> set[str]:
    """Returns the stages `dvc status` lists, leaving out the always-changed fingerprint stages."""
    status = json.loads(dvc(root, "status", "--json") or "{}")
    return {name for name, changes in status.items() if changes != ["always changed"]}


def fake_outputs(root: Path) -> None:
    """Creates a stand-in file for every dep and out a stage of dvc.yaml names that does not exist yet."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        paths = {item.def_path for stage in repo.index.stages for item in [*stage.deps, *stage.outs]}
    for name in sorted(paths):
        path = root / name
        if path.exists() or name.endswith(".yaml"):
            continue
        if not Path(name).suffix:  # a folder output (a corpus, a run, the plots)
            path.mkdir(parents=True)
            path = path / "stand-in.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"stand-in for {name}\n")


def test_the_worked_example_adds_stages_and_leaves_every_other_one_up_to_date(tmp_path):
    model_path, source, entries = worked_example()
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", "profile.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    for name in ("sdcaff", "baselines", "benchmarks"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    # The study as committed: resolved settings, stand-ins for everything else, all recorded in dvc.lock.
    dvc(root, "repro", "--single-item", "resolve")
    fake_outputs(root)
    dvc(root, "commit", "--force", "--quiet")
    assert changed_stages(root) == set()
    before = {p.name: p.read_bytes() for p in (root / "artifacts/experiments").iterdir()}

    # The doc's two steps: one new file, params entries merged into their sections.
    (root / model_path).write_text(source, encoding="utf-8")
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(params, entries), sort_keys=False))
    new = sorted(entries["experiments"])
    # report too: its variants list gained the new row name.
    expected = {"resolve", "report"} | {f"{verb}@{name}" for verb in ("train", "evaluate") for name in new}
    assert changed_stages(root) == expected
    # Once resolve has run, the other experiments' settings files are the same bytes: their stages stay done.
    dvc(root, "repro", "--single-item", "resolve")
    after = {p.name: p.read_bytes() for p in (root / "artifacts/experiments").iterdir()}
    # (_params.json, the params files' md5 for a hand-run evaluate, changes with params.yaml; no stage reads it.)
    assert {k: v for k, v in after.items() if k in before and k != units.SOURCES_FILE} == {
        k: v for k, v in before.items() if k != units.SOURCES_FILE}
    assert set(after) - set(before) == {f"{name}.json" for name in new}
    assert changed_stages(root) == expected - {"resolve"}


def test_the_worked_example_trains_and_evaluates(tmp_path, monkeypatch):
    model_path, source, entries = worked_example()
    fake_study.write_study(tmp_path)
    (tmp_path / model_path).parent.mkdir(parents=True, exist_ok=True)
    # Under a name the installed `baselines` package lacks, so it is loaded from its file like any user's.
    local = Path("mine") / Path(model_path).name
    (tmp_path / local).parent.mkdir()
    (tmp_path / local).write_text(source, encoding="utf-8")
    entry = dict(entries["experiments"]["mfcc-gru-iemocap-loso"], model=local.as_posix(), protocol="honest",
                 folds=[0])
    fake_study.write_params(tmp_path / "params.yaml", experiments={"gru": entry})
    monkeypatch.chdir(tmp_path)
    config = train.load_config("gru")
    assert config.model_params.n_mfcc == fake_study.N_MFCC  # shared with the profile's model block
    assert cli.main(["resolve"]) == 0
    assert cli.main(["train", "--experiment", "gru"]) == 0
    assert cli.main(["evaluate", "--experiment", "gru"]) == 0
    record = json.loads((tmp_path / "results/metrics/gru.json").read_text())
    assert record["model"] == "mine/mfcc_gru.py" and record["variant"] == "mfcc-gru"
    assert 0.0 <= record["ua"]["fold_mean"] <= 100.0 and len(record["per_fold"]) == 1
