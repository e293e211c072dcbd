"""CI's guard on the reported numbers: the reduced real pipeline against committed expectations."""

import json
import os
import shutil

import pytest
import pipeline_run

from sdcaff import cli
from sdcaff.data import fingerprint


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Runs the reduced pipeline once (a few minutes on 2 cores); yields its working directory."""
    here = os.getcwd()
    workdir = tmp_path_factory.mktemp("pipeline")
    corpus = workdir / "corpus with spaces é" / "IEMOCAP_full_release"
    try:
        pipeline_run.run(workdir)
        yield workdir, corpus
    finally:
        os.chdir(here)
        if corpus.exists():
            pipeline_run.make_writable(workdir)


def check(metrics_dir, expected=pipeline_run.EXPECTED):
    return cli.main(["check", "--expected", str(expected), "--metrics-dir", str(metrics_dir)])


def test_reported_numbers_match_the_committed_expectations(study, capsys):
    workdir, _ = study
    code = check(workdir / "results/metrics")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "MISSING" not in out


def test_the_guarded_run_learns(study):
    # A guard on a model at chance guards noise: any code change moves it by as much as a CPU kind does.
    # The reduced run reaches UA 58-74 on every CPU kind measured (docs/regression.md); 50 is twice chance.
    workdir, _ = study
    for exp in pipeline_run.EXPERIMENTS:
        m = json.loads((workdir / f"results/metrics/{exp}.json").read_text())
        assert m["ua"]["fold_mean"] >= 50.0, (exp, m["ua"])


def test_every_experiment_is_complete(study):
    workdir, _ = study
    for exp in pipeline_run.EXPERIMENTS:
        m = json.loads((workdir / f"results/metrics/{exp}.json").read_text())
        assert m["labels"] == ["neutral", "sad", "angry", "happy"]
        assert len(m["per_fold"]) == len(pipeline_run.FOLDS)
        assert sum(f["n"] for f in m["per_fold"]) == sum(map(sum, m["confusion"]))


@pytest.mark.parametrize("key,sign", [("wa", -1.0), ("ua", 1.0)])
def test_a_shifted_metric_fails_the_check(study, tmp_path, key, sign, capsys):
    workdir, _ = study
    shifted = tmp_path / "metrics"
    shutil.copytree(workdir / "results/metrics", shifted)
    path = shifted / "iemocap-loso.json"
    m = json.loads(path.read_text())
    # This run may itself sit up to one tolerance from the recorded value (another CPU kind), on either
    # side: a shift of two tolerances and half a point always lands outside.
    expected = json.loads(pipeline_run.EXPECTED.read_text())["experiments"]["iemocap-loso"]
    tolerance = expected[f"{key}.pooled"]["tolerance"]
    m[key]["pooled"] += sign * (2 * tolerance + 0.5)
    path.write_text(json.dumps(m))
    assert check(shifted) == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_missing_experiment_fails_the_check(study, tmp_path, capsys):
    workdir, _ = study
    shutil.copytree(workdir / "results/metrics", tmp_path / "metrics")
    (tmp_path / "metrics/iemocap-authors.json").unlink()
    assert check(tmp_path / "metrics") == 1
    assert "MISSING" in capsys.readouterr().out


@pytest.mark.reliability("read-only corpus")
def test_the_corpus_directory_was_never_written(study):
    workdir, corpus = study
    recorded = json.loads((workdir / "results/corpora/iemocap.json").read_text())
    now = fingerprint.fingerprint("iemocap", corpus, False)
    assert now["sha256"] == recorded["sha256"]
    assert not [p for p in corpus.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]
