import json

import pytest

from sdcaff import check, cli
from sdcaff.paper import REPORTED


def metrics(exp, wa, ua, model="sdcaff", protocol="iemocap-authors", authors=None):
    m = {"experiment": exp, "model": model, "protocol": protocol, "profile": "quick", "seeds": [1],
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


def test_against_paper_uses_the_matching_aggregation(project, capsys):
    head = REPORTED[0]
    (project / "results/metrics/h.json").write_text(json.dumps(
        metrics("h", 10.0, 10.0, authors=(head.wa + 1.0, head.ua - 1.5))))
    for path in (project / "results/metrics").glob("[ab].json"):
        path.unlink()
    cli.main(["check", "--against", "paper"])
    out = capsys.readouterr().out
    wa_line = next(x for x in out.splitlines() if "authors.wa" in x)
    ua_line = next(x for x in out.splitlines() if "authors.ua" in x)
    assert "+1.00" in wa_line and wa_line.rstrip().endswith("ok")
    assert "-1.50" in ua_line and ua_line.rstrip().endswith("ok")
    assert "MISSING" in out  # no baseline runs here: the confusion-matrix rows cannot pass
    cli.main(["check", "--against", "paper", "--tolerance", "1.2"])
    out = capsys.readouterr().out
    assert next(x for x in out.splitlines() if "authors.ua" in x).rstrip().endswith("FAIL (lower)")
