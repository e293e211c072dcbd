"""An experiment that cannot run here (an ssl feature set without an upstream checkpoint) is skipped visibly:
train and evaluate succeed with one line saying why, the report lists it, check passes over it."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from sdcaff import cli, evaluate, results, tables, train
from fake_study import write_params, write_study
from test_tables import make_record

REASON = "no upstream checkpoint configured (feature_sets.iemocap-ssl.upstream)"
LINEAR = {"protocol": "honest", "model": "baselines/mfcc_linear.py", "variant": "ssl", "group": "baseline",
          "features": {"train": "iemocap-ssl", "test": "iemocap-ssl"},
          "train": {"loss": {"emotion_weight": 1.0, "gender_weight": 0.0, "center_weight": 0.0}}}


@pytest.fixture
def study(tmp_path, monkeypatch):
    """Returns a tiny study whose experiment `ssl` reads an ssl feature set with no upstream; cwd set to it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDCAFF_PARAMS", str(tmp_path / "params.yaml"))
    write_study(tmp_path)
    write_params(tmp_path / "params.yaml", experiments={
        "honest": {"protocol": "honest", "features": {"train": "iemocap", "test": "iemocap"}}, "ssl": LINEAR})
    data = yaml.safe_load((tmp_path / "params.yaml").read_text())
    data["feature_sets"] = {"iemocap": {"corpus": "iemocap"},
                            "iemocap-ssl": {"corpus": "iemocap", "kind": "ssl", "upstream": None}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def set_upstream(root, value):
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["feature_sets"]["iemocap-ssl"]["upstream"] = value
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_reason_comes_from_the_feature_set(study):
    assert train.load_config("ssl").not_run == REASON
    assert train.load_config("honest").not_run is None
    set_upstream(study, "/models/wavlm-base-plus")
    assert train.load_config("ssl").not_run is None
    data = yaml.safe_load((study / "params.yaml").read_text())
    data["features"] = {"kind": "ssl"}  # the section's default reaches a set that does not override it
    data["feature_sets"]["iemocap"] = {"corpus": "iemocap"}
    (study / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert train.load_config("honest").not_run == REASON.replace("iemocap-ssl", "iemocap")


def test_train_and_evaluate_skip_with_one_line_and_write_their_outputs(study, caplog):
    (study / "artifacts/runs/ssl/seed_7_fold_0").mkdir(parents=True)  # a unit of an earlier run with a checkpoint
    with caplog.at_level(logging.INFO):
        assert cli.main(["resolve"]) == 0
        assert cli.main(["train", "--experiment", "ssl"]) == 0
        assert cli.main(["evaluate", "--experiment", "ssl"]) == 0
    said = [r.getMessage() for r in caplog.records if "not run" in r.getMessage()]
    assert said[0] == f"experiment ssl: not run: {REASON}" and len(said) == 2
    runs = study / "artifacts/runs/ssl"
    assert sorted(p.name for p in runs.iterdir()) == ["NOT_RUN"]
    assert (runs / "NOT_RUN").read_text() == REASON + "\n"
    record = json.loads((study / "results/metrics/ssl.json").read_text())
    assert record == {"experiment": "ssl", "model": "baselines/mfcc_linear.py", "variant": "ssl",
                      "group": "baseline", "protocol": "honest", "profile": "tiny", "not_run": REASON}
    assert evaluate.headline(record) == {"not_run": REASON, "units": 0}
    assert (study / "results/predictions/ssl.csv").read_text().startswith("utt_id,fold,seed,true,predicted")


def test_resolve_names_the_reason_only_where_there_is_one(study):
    assert cli.main(["resolve"]) == 0
    resolved = {p.stem: json.loads(p.read_text()) for p in (study / "artifacts/experiments").glob("*.json")}
    assert resolved["ssl"]["not_run"] == REASON and "not_run" not in resolved["honest"]


def test_report_lists_it_and_check_passes_over_it(study, capsys):
    metrics = study / "results/metrics"
    metrics.mkdir(parents=True)
    (metrics / "honest.json").write_text(json.dumps(make_record("honest", "sdcaff", "iemocap-loso")))
    (metrics / "ssl.json").write_text(json.dumps(
        {"experiment": "ssl", "variant": "ssl", "protocol": "iemocap-loso", "not_run": REASON}))
    ran, skipped = results.split_not_run(results.load_metrics(metrics))
    assert sorted(ran) == ["honest"] and skipped == {"ssl": REASON}
    data = yaml.safe_load((study / "params.yaml").read_text())
    data["report"] = {"variants": {"sdcaff": "SD-CAFF", "ssl": "SSL"}, "plots": {}}
    data["check"] = {"expected": "expected.json"}
    (study / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["report"]) == 0
    text = (study / "results/REPORT.md").read_text()
    assert f"## Not run\n" in text and f"- `ssl`: not run: {REASON}" in text
    assert "| SSL" not in text  # no table row for an experiment without numbers
    assert cli.main(["check", "--record", "--tolerance", "1.0"]) == 0
    assert list(json.loads((study / "expected.json").read_text())["experiments"]) == ["honest"]
    assert cli.main(["check"]) == 0
    assert f"ssl: not run: {REASON}" in capsys.readouterr().out


def test_every_table_names_an_upstream_checkpoint():
    names = {"sdcaff": "SD-CAFF", "ssl": "SSL head"}
    rec = make_record("ssl-loso", "ssl", "iemocap-loso")
    rec["upstream"] = {"name": "wavlm-base-plus", "revision": "0123456789abcdef", "model_type": "wavlm"}
    named = tables.with_checkpoints({"ssl-loso": rec}, names)
    assert named == {"sdcaff": "SD-CAFF", "ssl": "SSL head (wavlm-base-plus@0123456789ab)"}
    built = tables.build({"ssl-loso": rec, "sdcaff-loso": make_record("sdcaff-loso", "sdcaff", "iemocap-loso")},
                         names)
    assert "SSL head (wavlm-base-plus@0123456789ab)" in built["variants"]["variant"].tolist()
    two = {"iemocap-ssl": {"name": "a"}, "msp-ssl": {"name": "b", "revision": None}}
    assert tables.upstream_label(two) == "a + b"
