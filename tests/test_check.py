import json
import logging
from pathlib import Path

import pytest

from sdcaff import check, cli
from sdcaff.paper import REPORTED


def metrics(exp, wa, ua, model="sdcaff", protocol="iemocap-authors", authors=None, variant="sdcaff"):
    m = {"experiment": exp, "model": model, "variant": variant, "protocol": protocol, "profile": "quick", "seeds": [1],
         "wa": {"pooled": wa, "fold_mean": wa + 0.1, "fold_std": 1.0},
         "ua": {"pooled": ua, "fold_mean": ua + 0.1, "fold_std": 1.0}}
    if authors:
        m["authors"] = {"wa": authors[0], "ua": authors[1]}
    return m


@pytest.fixture
def project(in_tmp):
    (in_tmp / "results/metrics").mkdir(parents=True)
    (in_tmp / "params.yaml").write_text(
        "check:\n  expected: results/expected.json\n  metrics_dir: results/metrics\n"
        "  tolerance: 0.5\n  paper_tolerance: 2.0\n")
    for exp, wa, ua in [("a", 60.0, 55.0), ("b", 40.0, 38.5)]:
        (in_tmp / f"results/metrics/{exp}.json").write_text(json.dumps(metrics(exp, wa, ua)))
    assert cli.main(["check", "--record"]) == 0
    return in_tmp


def shift(root, exp, key, delta):
    path = root / f"results/metrics/{exp}.json"
    m = json.loads(path.read_text())
    m[key]["pooled"] += delta
    path.write_text(json.dumps(m))


def test_passes_on_the_recorded_metrics(project, capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "8 metrics within tolerance, 0 outside" in out
    expected = json.loads((project / "results/expected.json").read_text())
    assert expected["provenance"]["profile"] == "quick"
    assert expected["experiments"]["a"]["wa.pooled"] == {"value": 60.0, "tolerance": 0.5}


@pytest.mark.parametrize("delta", [-3.0, 3.0, -0.6])
def test_fails_on_a_shifted_metric(project, capsys, delta):
    shift(project, "b", "ua", delta)
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("b ") and "ua.pooled" in x)
    assert "FAIL" in line and f"{delta:+.2f}" in line


def test_within_tolerance_passes(project):
    shift(project, "a", "wa", 0.4)
    assert cli.main(["check"]) == 0


def test_missing_experiment_fails(project, capsys):
    (project / "results/metrics/a.json").unlink()
    assert cli.main(["check"]) == 1
    assert "MISSING" in capsys.readouterr().out


def test_new_experiment_is_listed_but_not_a_failure(project, capsys):
    (project / "results/metrics/c.json").write_text(json.dumps(metrics("c", 1.0, 1.0)))
    assert cli.main(["check"]) == 0
    assert "UNEXPECTED" in capsys.readouterr().out


def test_missing_expectations_file_is_a_clear_error(project, capsys):
    (project / "results/expected.json").unlink()
    assert cli.main(["check"]) == 1
    assert "expectations file not found" in capsys.readouterr().err


def write(root, name, record):
    (root / f"results/metrics/{name}.json").write_text(json.dumps(record))


def paper_line(out, experiment, key):
    return next(x for x in out.splitlines() if x.startswith(experiment + " ") and key in x)


def test_against_paper_uses_the_matching_aggregation(project, capsys):
    head = REPORTED[0]
    write(project, "iemocap-authors", metrics("iemocap-authors", 10.0, 10.0, authors=(head.wa + 1.0, head.ua - 1.5)))
    for path in (project / "results/metrics").glob("[ab].json"):
        path.unlink()
    cli.main(["check", "--against", "paper"])
    out = capsys.readouterr().out
    wa_line = paper_line(out, "iemocap-authors", "authors.wa")
    ua_line = paper_line(out, "iemocap-authors", "authors.ua")
    assert "+1.00" in wa_line and wa_line.rstrip().endswith("ok")
    assert "-1.50" in ua_line and ua_line.rstrip().endswith("ok")
    assert "MISSING" in paper_line(out, "cnn-iemocap-authors", "wa.pooled")  # no comparison runs here
    cli.main(["check", "--against", "paper", "--tolerance", "1.2"])
    out = capsys.readouterr().out
    assert paper_line(out, "iemocap-authors", "authors.ua").rstrip().endswith("FAIL (lower)")


def test_against_paper_compares_the_experiments_the_paper_table_uses(project, capsys):
    # Every SD-CAFF variant has model `sdcaff`: matching on model picked add-iemocap-authors (first by name)
    # for the headline and missed the CNN, LSTM and CRNN runs, whose model is `sdcaff` too.
    write(project, "add-iemocap-authors", metrics("add-iemocap-authors", 11.0, 12.0, authors=(13.0, 14.0),
                                                  variant="add"))
    write(project, "iemocap-authors", metrics("iemocap-authors", 71.0, 72.0, authors=(73.0, 74.0)))
    write(project, "msp-improv-authors", metrics("msp-improv-authors", 51.0, 52.0, authors=(53.0, 54.0),
                                                 protocol="msp-improv-authors"))
    for variant, wa in (("cnn", 61.0), ("lstm", 62.0), ("crnn", 63.0)):
        name = f"{variant}-iemocap-authors"
        write(project, name, metrics(name, wa, wa - 5.0, variant=variant))
    cli.main(["check", "--against", "paper"])
    out = capsys.readouterr().out
    assert "add-iemocap-authors" not in out and "MISSING" not in out
    assert "73.00" in paper_line(out, "iemocap-authors", "authors.wa")
    assert "72.00" in paper_line(out, "iemocap-authors", "ua.pooled")
    assert "54.00" in paper_line(out, "msp-improv-authors", "authors.ua")
    for variant, wa in (("cnn", 61.0), ("lstm", 62.0), ("crnn", 63.0)):
        assert f"{wa:.2f}" in paper_line(out, f"{variant}-iemocap-authors", "wa.pooled")
        assert f"{wa - 5.0:.2f}" in paper_line(out, f"{variant}-iemocap-authors", "ua.pooled")


def test_against_paper_refuses_an_experiment_run_under_another_protocol(project, capsys):
    write(project, "cnn-iemocap-authors", metrics("cnn-iemocap-authors", 61.0, 60.0, protocol="iemocap-loso"))
    assert cli.main(["check", "--against", "paper"]) == 1
    err = capsys.readouterr().err
    assert "cnn-iemocap-authors.json: protocol 'iemocap-loso'" in err and "'iemocap-authors'" in err


def fingerprint(root, corpus, synthetic):
    (root / "results/corpora").mkdir(parents=True, exist_ok=True)
    (root / f"results/corpora/{corpus}.json").write_text(json.dumps({"corpus": corpus, "synthetic": synthetic}))


@pytest.mark.parametrize("synthetic", [True, False])
def test_against_paper_says_loudly_when_the_corpora_are_synthetic(project, capsys, caplog, synthetic):
    write(project, "iemocap-authors", metrics("iemocap-authors", 71.0, 72.0, authors=(73.0, 74.0)))
    fingerprint(project, "iemocap", synthetic)
    with caplog.at_level(logging.WARNING, logger="sdcaff.check"):
        cli.main(["check", "--against", "paper"])
    out = capsys.readouterr().out
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if synthetic:
        assert out.index(check.BANNER) < out.index("experiment ")  # above the table
        assert any("synthetic corpora compared with the paper: iemocap" in m for m in warned)
    else:
        assert check.BANNER not in out and not any("synthetic" in m for m in warned)


def test_against_paper_warns_when_a_compared_corpus_has_no_fingerprint(project, capsys, caplog):
    write(project, "msp-improv-authors", metrics("msp-improv-authors", 51.0, 52.0, protocol="msp-improv-authors"))
    fingerprint(project, "iemocap", False)
    with caplog.at_level(logging.WARNING, logger="sdcaff.check"):
        cli.main(["check", "--against", "paper"])
    assert check.BANNER not in capsys.readouterr().out
    assert any("without a fingerprint" in r.getMessage() and "msp-improv" in r.getMessage()
               for r in caplog.records)


@pytest.mark.reliability("check input")
@pytest.mark.parametrize("verb", [["check"], ["check", "--against", "paper"], ["check", "--record"]])
def test_a_saved_copy_beside_a_regressed_file_fails_naming_both(project, capsys, verb):
    # The old good file kept as a.prev.json sorted after a.json and silently replaced the regression.
    good = project / "results/metrics/a.json"
    (project / "results/metrics/a.prev.json").write_text(good.read_text())
    shift(project, "a", "wa", -10.0)
    assert cli.main(verb) == 1
    err = capsys.readouterr().err
    assert "results/metrics/a.json, results/metrics/a.prev.json: experiment 'a' is in 2 files" in err
    assert "Traceback" not in err


BAD_FILES = {
    "empty list": ("a.json", b"[]", "a.json: expected a JSON object, got list"),
    "non-UTF-8": ("a.json", b'{"experiment": "a", "model": "\xff\xfe"}', "a.json: not UTF-8 text"),
    "syntax": ("a.json", b'{\n  "experiment": "a",\n  "wa": {"pooled": 1.0,\n}\n', "a.json:4: not valid JSON"),
    "name differs from field": ("c.json", json.dumps(metrics("zz", 1.0, 1.0)).encode(),
                                "c.json: holds experiment 'zz', but a metrics file must be named <experiment>.json"),
    "stray non-record": ("notes.json", b'{"note": "tried lr 1e-3"}', "notes.json: missing key 'experiment'"),
    "experiment not a string": ("c.json", b'{"experiment": 3}', "c.json: 'experiment' must be a string"),
}


@pytest.mark.reliability("check input")
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_metrics_files_are_errors_naming_the_file(project, capsys, case):
    name, content, message = BAD_FILES[case]
    (project / "results/metrics" / name).write_bytes(content)
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert f"sdcaff check: error: results/metrics/{message}" in err


@pytest.mark.reliability("check input")
def test_two_misnamed_files_of_one_experiment_are_a_duplicate(project, capsys):
    for name in ("c-old", "c-new"):
        write(project, name, metrics("c", 1.0, 1.0))
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert "results/metrics/c-new.json, results/metrics/c-old.json: experiment 'c' is in 2 files" in err


def test_check_needs_only_the_keys_it_reads(project, capsys):
    # Provenance (train_seconds, env, params_hash) leaves the metrics files; nothing here may need it.
    write(project, "b", {"experiment": "b", "wa": {"pooled": 40.0, "fold_mean": 40.1},
                         "ua": {"pooled": 38.5, "fold_mean": 38.6}})
    assert cli.main(["check"]) == 0
    assert "8 metrics within tolerance" in capsys.readouterr().out


def test_record_with_spread_sets_each_tolerance_from_the_measured_differences(tmp_path, monkeypatch):
    # Two runs of one study on two CPU kinds: each metric's tolerance is 1.5 x the largest difference its
    # group showed (rounded up to 0.1), never below the floor, and a regression beyond it still fails.
    def write(directory: Path, shift: dict[str, float]) -> Path:
        directory.mkdir()
        for exp, group in (("head", "headline"), ("abl", "ablation")):
            m = {"experiment": exp, "group": group, "model": "sdcaff/model", "protocol": "p", "seeds": [1],
                 "wa": {"pooled": 60.0 + shift.get(exp, 0.0), "fold_mean": 60.0},
                 "ua": {"pooled": 50.0, "fold_mean": 50.0 - shift.get(exp, 0.0)}}
            (directory / f"{exp}.json").write_text(json.dumps(m))
        return directory

    native = write(tmp_path / "native", {})
    other = write(tmp_path / "avx2", {"head": 0.2, "abl": 4.0})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("check:\n  tolerance: 0.5\n  spread_factor: 1.5\n")
    expected = tmp_path / "expected.json"
    assert cli.main(["check", "--record", "--expected", str(expected), "--metrics-dir", str(native),
                     "--spread", str(other)]) == 0
    doc = json.loads(expected.read_text())
    head, abl = doc["experiments"]["head"], doc["experiments"]["abl"]
    assert head["wa.pooled"] == {"value": 60.0, "tolerance": 0.5, "spread": 0.2}  # 0.3 is under the floor
    assert head["wa.fold_mean"]["tolerance"] == 0.5 and head["wa.fold_mean"]["spread"] == 0.0
    assert abl["wa.pooled"]["tolerance"] == 6.0 and abl["ua.fold_mean"]["tolerance"] == 6.0
    assert doc["provenance"]["spread"] == {"runs": [str(other)], "factor": 1.5, "floor": 0.5}
    assert cli.main(["check", "--expected", str(expected), "--metrics-dir", str(other)]) == 0
    worse = write(tmp_path / "worse", {"abl": 6.5})
    assert cli.main(["check", "--expected", str(expected), "--metrics-dir", str(worse)]) == 1
    # Re-recorded on a new kind against that run, the spreads measured earlier still count where larger.
    assert cli.main(["check", "--record", "--expected", str(tmp_path / "again.json"), "--metrics-dir", str(native),
                     "--spread", str(native), "--keep-spread", str(expected)]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["experiments"]["abl"]["wa.pooled"] == {"value": 60.0, "tolerance": 6.0, "spread": 4.0}
    assert again["experiments"]["head"]["wa.pooled"] == {"value": 60.0, "tolerance": 0.5, "spread": 0.2}
    assert again["provenance"]["spread"]["kept_from"] == str(expected)
    assert cli.main(["check", "--record", "--expected", str(tmp_path / "x.json"), "--metrics-dir", str(native),
                     "--keep-spread", str(expected)]) == 1
    # A spread run that lacks an experiment cannot vouch for its tolerance.
    (other / "abl.json").unlink()
    assert cli.main(["check", "--record", "--expected", str(expected), "--metrics-dir", str(native),
                     "--spread", str(other)]) == 1
