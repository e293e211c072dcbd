import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import fake_study
from sdcaff import cli, env, units
from sdcaff.data.loader import read_split
from sdcaff.errors import SdcaffError
from sdcaff.evaluate import Unit, summarise

N, S, A, H = fake_study.CLASSES  # neutral, sad, angry, happy

# Two units of unequal size, so pooled and fold-mean scores differ:
#   fold 0: true N N S A, predicted N N S N -> WA 75, UA (1 + 1 + 0) / 3 = 66.67 (happy absent)
#   fold 1: true H H,     predicted H N     -> WA 50, UA 50
#   pooled: 4 of 6 right -> WA 66.67; recalls N 2/2, S 1/1, A 0/1, H 1/2 -> UA 62.5
UNITS = {
    0: ([N, N, S, A], [N, N, S, N], {"wa": 80.0, "ua": 70.0}, {"wa": 75.0, "ua": 60.0}),
    1: ([H, H], [H, N], {"wa": 60.0, "ua": 50.0}, {"wa": 40.0, "ua": 45.0}),
}


def predictions(fold: int, seed: int, true: list[str], pred: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"utt_id": [f"iemocap/u{fold}{i}" for i in range(len(true))], "fold": fold, "seed": seed,
                          "true": true, "predicted": pred})
    for c in fake_study.CLASSES:
        frame[f"p_{c}"] = [1.0 if p == c else 0.0 for p in pred]
    return frame


def result(key: dict, authors: dict, last: dict) -> dict:
    return {"selected_epoch": 2, "authors": authors, "last_epoch": last, "key": key, "key_hash": env.params_hash(key),
            "unit_hash": "unit-" + env.params_hash(key),
            "options": {"device": "cpu", "amp": False, "compile": False}, "env": {"torch": "test"}}


@pytest.fixture
def study(in_tmp):
    """params.yaml, a test_max split with two folds, and both units of seed 7 finished by hand."""
    fake_study.write_params(in_tmp / "params.yaml")
    ids = fake_study.utt_ids("iemocap", 16)
    fake_study.write_features(in_tmp / "artifacts/features/iemocap.pt", ids)
    fake_study.write_split(in_tmp / "artifacts/splits", "random", fake_study.split_rows(ids, ids, 2, True), "test_max")
    assert cli.main(["resolve"]) == 0
    config = units.read_resolved("authors")
    key = units.unit_key(config, read_split(units.split_path(config.spec)))
    for fold, (true, pred, authors, last) in UNITS.items():
        directory = units.unit_dir("authors", 7, fold)
        directory.mkdir(parents=True)
        predictions(fold, 7, true, pred).to_csv(directory / "predictions.csv", index=False)
        (directory / "result.json").write_text(json.dumps(result(key, authors, last)))
        (directory / "done").write_text("finished\n")
    return in_tmp, config


def test_pooled_and_fold_mean_are_computed_apart(study):
    root, config = study
    split = read_split(root / "artifacts/splits/random.csv")
    units = [Unit(7, fold, result({"inputs": {}}, a, last), predictions(fold, 7, t, p))
             for fold, (t, p, a, last) in UNITS.items()]
    metrics = summarise(config, split, units)
    assert metrics["wa"] == {"pooled": pytest.approx(66.6667), "fold_mean": 62.5, "fold_std": pytest.approx(17.6777)}
    assert metrics["ua"]["pooled"] == 62.5
    assert metrics["ua"]["fold_mean"] == pytest.approx((200 / 3 + 50) / 2, abs=1e-4)
    assert [(f["fold"], f["wa"], f["n"]) for f in metrics["per_fold"]] == [(0, 75.0, 4), (1, 50.0, 2)]
    # Rows are true classes, columns predictions, in the split's class order.
    assert metrics["confusion"] == [[2, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 1]]
    # The paper's numbers: the per-unit maxima over epochs, averaged over folds.
    assert metrics["authors"]["wa"] == 70.0 and metrics["authors"]["ua"] == 60.0
    assert metrics["last_epoch"]["wa"]["fold_mean"] == 57.5 and metrics["last_epoch"]["ua"]["fold_mean"] == 52.5
    assert metrics["per_seed"] == [{"seed": 7, "wa": 62.5, "ua": pytest.approx(58.3333)}]
    # Per class, from the confusion above: angry is never right, sad never wrongly predicted.
    per_class = metrics["per_class"]
    assert list(per_class) == fake_study.CLASSES
    assert per_class["neutral"] == {"recall": 100.0, "precision": 50.0, "f1": pytest.approx(66.6667), "support": 2,
                                    "recall_fold_mean": 100.0, "recall_fold_std": None}
    assert per_class["angry"]["recall"] == 0.0 and per_class["angry"]["precision"] is None  # never predicted
    assert per_class["happy"]["recall"] == 50.0 and per_class["happy"]["precision"] == 100.0
    recalls = [per_class[c]["recall"] for c in fake_study.CLASSES]
    assert sum(recalls) / 4 == pytest.approx(metrics["ua"]["pooled"])  # UA is the mean recall


def test_evaluate_writes_the_metrics_schema_and_pooled_predictions(study):
    root, _ = study
    assert cli.main(["evaluate", "--experiment", "authors"]) == 0
    metrics = json.loads((root / "results/metrics/authors.json").read_text())
    assert list(metrics) == [
        "experiment", "model", "variant", "group", "protocol", "train_corpus", "test_corpus", "corpora", "labels", "seeds", "folds", "n", "wa", "ua",
        "per_fold", "per_seed", "confusion", "per_class", "per_speaker", "per_session", "selection", "selected_by", "authors", "last_epoch", "profile",
        "params_hash", "inputs", "key_hash", "options", "env",
    ]
    assert (metrics["experiment"], metrics["model"], metrics["protocol"]) == ("authors", "sdcaff/model", "random")
    # The inputs' content, and nothing that differs between runs or commits: provenance is kept apart.
    assert set(metrics["inputs"]) == {"artifacts/features/iemocap.pt", "artifacts/splits/random.csv",
                                      "artifacts/splits/random.json"}
    assert "commit" not in metrics["env"] and "train_seconds" not in metrics
    assert json.loads((root / "artifacts/provenance/evaluate/authors.json").read_text())["commit"]
    assert (metrics["train_corpus"], metrics["test_corpus"], metrics["selection"]) == ("iemocap", "iemocap", "test_max")
    assert metrics["labels"] == fake_study.CLASSES and metrics["seeds"] == [7] and metrics["profile"] == "tiny"
    assert set(metrics["wa"]) == set(metrics["ua"]) == {"pooled", "fold_mean", "fold_std"}
    assert set(metrics["per_fold"][0]) >= {"seed", "fold", "wa", "ua", "n", "n_train"}
    assert (metrics["variant"], metrics["group"]) == ("sdcaff", "headline")
    pooled = pd.read_csv(root / "results/predictions/authors.csv")
    assert len(pooled) == 6 and pooled["fold"].tolist() == [0, 0, 0, 0, 1, 1]


@pytest.mark.reliability("interruption")
def test_an_unfinished_unit_stops_evaluation(study, capsys):
    root, _ = study
    (units.unit_dir("authors", 7, 1) / "done").unlink()
    assert cli.main(["evaluate", "--experiment", "authors"]) == 1
    err = capsys.readouterr().err
    assert "fold_1: unit not finished; run `sdcaff train --experiment authors`" in err
    assert not (root / "results/metrics/authors.json").exists()


@pytest.mark.reliability("interruption")
def test_units_trained_under_other_settings_are_refused(study, capsys):
    root, _ = study
    fake_study.write_params(root / "params.yaml", train={**fake_study.TINY_TRAIN, "lr": 1.0e-3})
    assert cli.main(["evaluate", "--experiment", "authors"]) == 1  # the resolved settings are the old ones
    assert "artifacts/experiments: resolved from other params than the current params.yaml" in capsys.readouterr().err
    assert cli.main(["resolve"]) == 0
    assert cli.main(["evaluate", "--experiment", "authors"]) == 1
    assert "fold_0: unit was trained on other settings than the current ones" in capsys.readouterr().err


def test_bad_prediction_labels_name_file_and_line(study, capsys):
    path = units.unit_dir("authors", 7, 0) / "predictions.csv"
    path.write_text(path.read_text().replace(",sad,", ",bored,"))
    assert cli.main(["evaluate", "--experiment", "authors"]) == 1
    assert f"{Path(path)}:4: true 'bored' is not one of" in capsys.readouterr().err


def test_the_headline_file_holds_only_the_numbers_a_summary_lists(study):
    root, _ = study
    assert cli.main(["evaluate", "--experiment", "authors"]) == 0
    metrics = json.loads((root / "results/metrics/authors.json").read_text())
    headline = json.loads((root / "results/headline/authors.json").read_text())
    assert headline == {"wa_pooled": metrics["wa"]["pooled"], "wa_fold_mean": metrics["wa"]["fold_mean"],
                        "ua_pooled": metrics["ua"]["pooled"], "ua_fold_mean": metrics["ua"]["fold_mean"],
                        "authors_wa": metrics["authors"]["wa"], "authors_ua": metrics["authors"]["ua"], "units": 2}


def test_per_speaker_and_per_session_scores_pool_each_speakers_test_rows(study):
    root, config = study
    split = read_split(root / "artifacts/splits/random.csv")
    units = [Unit(7, fold, result({"inputs": {}}, a, last), predictions(fold, 7, t, p))
             for fold, (t, p, a, last) in UNITS.items()]
    # fold 0's four rows are speaker A (session 1), fold 1's two rows speaker B (session 2).
    ids = [f"iemocap/u0{i}" for i in range(4)] + ["iemocap/u10", "iemocap/u11"]
    speakers = pd.DataFrame({"utt_id": ids, "speaker": ["A"] * 4 + ["B"] * 2, "session": ["1"] * 4 + ["2"] * 2})
    record = summarise(config, split, units, speakers=speakers.set_index("utt_id"))
    assert record["per_speaker"] == {"A": {"wa": 75.0, "ua": pytest.approx(66.6667), "n": 4},
                                     "B": {"wa": 50.0, "ua": 50.0, "n": 2}}
    assert record["per_session"] == {"1": record["per_speaker"]["A"], "2": record["per_speaker"]["B"]}
    with pytest.raises(SdcaffError, match="'iemocap/u11' has no row in the manifest"):
        summarise(config, split, units, speakers=speakers.iloc[:5].set_index("utt_id"))


def test_evaluate_starts_without_torch_or_any_model(study):
    # A fresh interpreter runs the stage: the units' keys are checked from the resolved settings and the
    # code's files, so neither torch nor the model's module (SpeechBrain for ECAPA) is imported.
    root, _ = study
    code = ("import sys\nfrom sdcaff import cli\nassert cli.main(['evaluate', '--experiment', 'authors']) == 0\n"
            "print(','.join(sorted(m for m in sys.modules if m in ('torch', 'speechbrain', 'sklearn.manifold') "
            "or m.startswith(('sdcaff.train', 'sdcaff.model', 'sdcaff.data.loader', 'baselines')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    assert json.loads((root / "results/metrics/authors.json").read_text())["per_fold"]
