"""The report verb end to end on tiny metrics files: tables, REPORT.md, provenance, bad input named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sdcaff import cli, env, params, plots, report, results
from test_tables import make_record, study

PARAMS = {"report": {
    "metrics_dir": "results/metrics", "tables_dir": "results/tables", "plots_dir": "results/plots",
    "report": "results/REPORT.md", "corpora_dir": "results/corpora", "bench_table": "results/tables/bench.md",
    "variants": {"sdcaff": "SD-CAFF", "cnn": "CNN branch only"}, "plots": {},
}}
TABLE_FILES = sorted(f"{n}.{s}" for n in ("paper", "variants", "protocol_gap", "cross_corpus", "literature", "per_class", "per_speaker")
                     for s in ("md", "csv", "tex"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Returns a directory holding params.yaml, metrics, fingerprints and a bench table; cwd set to it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDCAFF_PARAMS", str(tmp_path / "params.yaml"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    metrics = tmp_path / "results" / "metrics"
    metrics.mkdir(parents=True)
    for name, rec in study().items():
        (metrics / f"{name}.json").write_text(json.dumps(rec))
    corpora = tmp_path / "results" / "corpora"
    corpora.mkdir()
    (corpora / "iemocap.json").write_text(json.dumps({"corpus": "iemocap", "synthetic": True, "files": 12,
                                                      "sha256": "ab" * 32}))
    (tmp_path / "results" / "tables").mkdir()
    (tmp_path / "results" / "tables" / "bench.md").write_text("# Timing benchmarks\n\nBENCH-SENTINEL\n")
    return tmp_path


@pytest.fixture
def fake_draw(monkeypatch):
    """Replaces plots.draw with one that writes a single PNG-named file; returns the calls it saw."""
    calls = []

    def draw(records, out_dir, p, runs_dir, predictions_dir):
        calls.append((sorted(records), Path(out_dir), p, Path(runs_dir), Path(predictions_dir)))
        path = Path(out_dir) / "confusion_iemocap-loso.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG fake")
        return [path]

    monkeypatch.setattr(plots, "draw", draw)
    return calls


def test_report_verb_writes_tables_figures_and_report(workdir, fake_draw):
    assert cli.main(["report"]) == 0
    tables_dir = workdir / "results" / "tables"
    assert sorted(p.name for p in tables_dir.iterdir()) == sorted(TABLE_FILES + ["bench.md"])  # no temp files
    assert fake_draw[0][0] == sorted(study()) and fake_draw[0][1] == Path("results/plots")
    assert fake_draw[0][2] == plots.PlotsParams()
    assert fake_draw[0][3:] == (Path("artifacts/runs"), Path("results/predictions"))
    text = (workdir / "results" / "REPORT.md").read_text()
    assert "NOT comparable with the paper's" in text
    assert "corpus `iemocap`: SYNTHETIC" in text
    assert "seeds: 1, 2" in text and "profile(s): quick" in text
    for name in ("paper", "variants", "protocol_gap", "cross_corpus", "per_class"):
        assert (tables_dir / f"{name}.md").read_text() in text  # each table embedded verbatim
        assert f"(tables/{name}.csv)" in text
    assert "![confusion_iemocap-loso](plots/confusion_iemocap-loso.png)" in text
    assert "Confusion matrix of `iemocap-loso`" in text
    assert "## Timing benchmarks" in text and "BENCH-SENTINEL" in text  # bench headings demoted one level


def test_report_is_byte_identical_on_rerun(workdir, fake_draw):
    assert cli.main(["report"]) == 0
    out = workdir / "results"
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli.main(["report"]) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first


def test_real_corpora_and_missing_bench_are_said_plainly(workdir, fake_draw):
    (workdir / "results" / "corpora" / "iemocap.json").write_text(json.dumps({"corpus": "iemocap",
                                                                             "synthetic": False}))
    (workdir / "results" / "tables" / "bench.md").unlink()
    assert cli.main(["report"]) == 0
    text = (workdir / "results" / "REPORT.md").read_text()
    assert "licensed release" in text and "NOT comparable" not in text
    assert "No benchmark table at `results/tables/bench.md`" in text


def test_a_failing_figure_leaves_the_previous_report_untouched(workdir, monkeypatch):
    old = workdir / "results" / "REPORT.md"
    old.write_text("previous report\n")

    def broken(records, out_dir, p, runs_dir, predictions_dir):
        raise plots.PlotsError("results/metrics/x.json: no confusion")

    monkeypatch.setattr(plots, "draw", broken)
    assert cli.main(["report"]) == 1
    assert old.read_text() == "previous report\n"
    assert not [p for p in (workdir / "results").rglob("*.tmp")]


def test_corrupt_metrics_file_is_named(workdir, fake_draw, capsys):
    bad = workdir / "results" / "metrics" / "iemocap-loso.json"
    bad.write_text('{"experiment": "iemocap-loso", ')
    assert cli.main(["report"]) == 1
    assert "results/metrics/iemocap-loso.json:1: not valid JSON" in capsys.readouterr().err
    assert not (workdir / "results" / "REPORT.md").exists()


@pytest.mark.parametrize("drop, key", [("protocol", "'protocol'"), ("ua.fold_mean", "'ua.fold_mean'"),
                                       ("per_fold.0.n", "'per_fold[0].n'")])
def test_missing_key_names_file_and_key(tmp_path, drop, key):
    rec = make_record("e", "sdcaff", "iemocap-loso")
    parts = drop.split(".")
    node = rec
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[parts[-1]]
    (tmp_path / "e.json").write_text(json.dumps(rec))
    with pytest.raises(results.ResultsFileError, match=rf"e\.json: missing key {re.escape(key)}"):
        report.load_records(tmp_path)


def test_no_metrics_and_duplicate_experiments_are_errors(tmp_path):
    with pytest.raises(results.ResultsFileError, match="no metrics files"):
        report.load_records(tmp_path)
    rec = make_record("e", "sdcaff", "iemocap-loso")
    (tmp_path / "a.json").write_text(json.dumps(rec))
    (tmp_path / "b.json").write_text(json.dumps(rec))
    with pytest.raises(results.ResultsFileError, match=r"a\.json, .*b\.json: experiment 'e' is in 2 files"):
        report.load_records(tmp_path)


@pytest.mark.reliability("check input")
def test_report_refuses_a_stray_copy_as_check_does(workdir, fake_draw, capsys):
    metrics = workdir / "results" / "metrics"
    (metrics / "iemocap-loso.prev.json").write_text((metrics / "iemocap-loso.json").read_text())
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err
    assert "results/metrics/iemocap-loso.json, results/metrics/iemocap-loso.prev.json: experiment" in err
    assert not (workdir / "results" / "REPORT.md").exists()


def test_corrupt_fingerprint_is_named(tmp_path):
    (tmp_path / "iemocap.json").write_text("[1, 2]")
    with pytest.raises(results.ResultsFileError, match=r"iemocap\.json: expected a JSON object"):
        results.load_corpora(tmp_path)
    (tmp_path / "iemocap.json").write_text("{}")
    with pytest.raises(results.ResultsFileError, match=r"iemocap\.json: missing key 'synthetic'"):
        results.load_corpora(tmp_path)


def test_report_names_no_commit_and_is_the_same_at_any_commit(workdir, fake_draw, monkeypatch):
    monkeypatch.setattr(env, "git_commit", lambda *a, **k: "1111111")
    assert cli.main(["report"]) == 0
    first = (workdir / "results" / "REPORT.md").read_bytes()
    monkeypatch.setattr(env, "git_commit", lambda *a, **k: "2222222")
    assert cli.main(["report"]) == 0
    text = (workdir / "results" / "REPORT.md").read_text()
    assert text.encode() == first
    assert "1111111" not in text and "c0ffee" not in text  # nor the commits old metrics files carry
    assert "the commit that committed these files" in text


def test_provenance_lists_the_metrics_environment_when_present():
    recs = {name: rec for name, rec in study().items() if name in ("iemocap-loso", "cnn-iemocap-loso")}
    recs["iemocap-loso"]["env"] = {"torch": "2.5.0", "cpu": "x86_64", "threads": 2, "commit": "c0ffee"}
    recs["cnn-iemocap-loso"]["env"] = {"torch": "2.5.0", "cpu": "arm64", "threads": 2}
    text = report.provenance(recs, {})
    assert "- environment: torch 2.5.0; cpu arm64, x86_64; threads 2" in text and "c0ffee" not in text
    for rec in recs.values():  # provenance moved out of the metrics files: nothing here may need it
        for key in ("env", "train_seconds", "params_hash"):
            rec.pop(key, None)
    assert "- environment: not recorded in the metrics files" in report.provenance(recs, {})


def test_project_params_name_every_experiment_variant():
    root = Path(__file__).resolve().parents[1]
    p = params.load("report", report.ReportParams, root / "params.yaml")
    assert next(iter(p.variants)) == "sdcaff"  # the reference row comes first
    experiments = yaml.safe_load((root / "params.yaml").read_text())["experiments"]
    used = {e.get("variant", "sdcaff") for e in experiments.values()}
    assert used <= set(p.variants), f"variants without a display name: {sorted(used - set(p.variants))}"


def corpora_of(status: str, md5: str, synthetic: bool = False) -> dict:
    return {"iemocap": {"manifest_md5": md5, "synthetic": synthetic, "utterances": 600, "release_utterances": 10039,
                        "status": status}}


@pytest.mark.reliability("stale cache")
def test_the_report_refuses_metrics_from_two_copies_of_a_corpus(workdir, fake_draw, capsys):
    metrics = workdir / "results" / "metrics"
    for name in ("iemocap-loso", "cnn-iemocap-loso"):  # a partial repro on a real copy ...
        rec = json.loads((metrics / f"{name}.json").read_text())
        rec["corpora"] = corpora_of("real subset (600 of the release's 10,039 utterances, 6.0 %)", "1" * 32)
        (metrics / f"{name}.json").write_text(json.dumps(rec))
    rec = json.loads((metrics / "iemocap-authors.json").read_text())  # ... beside the synthetic study's files
    rec["corpora"] = corpora_of("synthetic", "2" * 32, synthetic=True)
    (metrics / "iemocap-authors.json").write_text(json.dumps(rec))
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err
    assert "corpus 'iemocap' differs between metrics files" in err
    assert "results/metrics/iemocap-authors.json" in err and "results/metrics/iemocap-loso.json" in err
    assert "results/metrics/cnn-iemocap-loso.json" in err and "222222222222 (synthetic)" in err
    assert not (workdir / "results" / "REPORT.md").exists() and fake_draw == []


@pytest.mark.reliability("stale cache")
def test_the_report_refuses_metrics_from_two_profiles(workdir, fake_draw, capsys):
    path = workdir / "results" / "metrics" / "cnn-iemocap-loso.json"
    rec = json.loads(path.read_text())
    rec["profile"] = "paper"
    path.write_text(json.dumps(rec))
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err
    assert "different profiles" in err and "profile paper: " in err and str(path.relative_to(workdir)) in err


def test_a_real_subset_is_named_in_the_provenance_and_the_paper_table(workdir, fake_draw):
    metrics = workdir / "results" / "metrics"
    subset = "real subset (600 of the release's 10,039 utterances, 6.0 %)"
    for path in metrics.glob("*.json"):
        rec = json.loads(path.read_text())
        rec["corpora"] = corpora_of(subset, "1" * 32)
        path.write_text(json.dumps(rec))
    (workdir / "results/corpora/iemocap.json").write_text(json.dumps(
        {"corpus": "iemocap", "synthetic": False, "files": 700, "sha256": "cd" * 32}))
    assert cli.main(["report"]) == 0
    text = (workdir / "results" / "REPORT.md").read_text()
    assert f"**`iemocap` is a {subset}.**" in text and "The corpora are synthetic" not in text
    paper = (workdir / "results/tables/paper.csv").read_text()
    assert subset in paper  # the reproduced headline says what it was computed on


def test_a_mix_of_real_and_synthetic_corpora_says_which_is_which():
    records = {"a": {"profile": "quick", "seeds": [1], "corpora": {
        "iemocap": {"manifest_md5": "1" * 32, "status": "real, complete"},
        "msp-improv": {"manifest_md5": "2" * 32, "status": "synthetic"}}}}
    text = report.provenance(records, {})
    assert "**Synthetic: `msp-improv`.**" in text and "the others are real" in text
    assert "The corpora are synthetic" not in text
    assert "- corpus `iemocap` in the metrics files: real, complete" in text


def test_figures_not_drawn_this_time_are_removed(workdir, fake_draw):
    plots_dir = workdir / "results" / "plots"
    plots_dir.mkdir(parents=True)
    (plots_dir / "curves_gone-experiment.png").write_bytes(b"\x89PNG stale")
    (plots_dir / "notes.txt").write_text("not a figure: left alone\n")
    assert cli.main(["report"]) == 0
    assert sorted(p.name for p in plots_dir.iterdir()) == ["confusion_iemocap-loso.png", "notes.txt"]
    assert "curves_gone-experiment" not in (workdir / "results" / "REPORT.md").read_text()
