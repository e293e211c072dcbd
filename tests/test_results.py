"""The committed study: results/metrics (from a real `make repro`) against results/expected.json and params.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sdcaff import cli

REPO = Path(__file__).resolve().parents[1]


def test_committed_metrics_pass_the_committed_expectations(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli.main(["check"]) == 0
    assert "0 outside or missing" in capsys.readouterr().out


def test_every_experiment_in_params_has_committed_metrics_and_expectations():
    experiments = set(yaml.safe_load((REPO / "params.yaml").read_text())["experiments"])
    records = {p.stem: json.loads(p.read_text()) for p in (REPO / "results/metrics").glob("*.json")}
    expected = set(json.loads((REPO / "results/expected.json").read_text())["experiments"])
    # An experiment that could not run (an ssl feature set without an upstream) has a record saying why,
    # and nothing to expect.
    ran = {name for name, record in records.items() if "not_run" not in record}
    assert experiments == set(records) and expected == ran
    assert {name for name in records if name.startswith("ssl-")} <= set(records) - ran


def test_the_report_embeds_every_table_from_the_same_metrics():
    report = (REPO / "results/REPORT.md").read_text()
    for name in ("paper", "variants", "protocol_gap", "cross_corpus", "literature", "per_class", "per_speaker"):
        table = (REPO / "results/tables" / f"{name}.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert rows and all(row in report for row in rows), name


def test_committed_metrics_name_their_corpora_and_break_results_down():
    for path in sorted((REPO / "results/metrics").glob("*.json")):
        metrics = json.loads(path.read_text())
        if "not_run" in metrics:
            continue
        assert metrics["corpora"], path.name
        assert all(c["status"] == "synthetic" and c["synthetic"] for c in metrics["corpora"].values()), path.name
        assert set(metrics["per_class"]) == {"neutral", "sad", "angry", "happy"}, path.name
        assert metrics["per_speaker"], path.name


def test_the_literature_table_places_the_full_loso_setting_beside_published_results():
    rows = [line for line in (REPO / "results/tables/literature.md").read_text().splitlines() if line.startswith("| ")]
    protocols = {row.split("|")[3].strip() for row in rows}
    assert {"iemocap-authors", "iemocap-loso", "iemocap-loso-full"} <= protocols
    assert any("published" in row and "leave-one-session-out" in row for row in rows)
