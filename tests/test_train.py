import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import fake_study
from sdcaff import cli, digest, train
from sdcaff.data.loader import UtteranceDataset, load_features, make_loader, read_split
from sdcaff.errors import ParamsError
from sdcaff.losses import LossParams, MultiTaskLoss
from sdcaff.model import ModelParams, build

METRIC_COLUMNS = ["epoch", "loss", "train_wa", "train_ua", "valid_wa", "valid_ua", "test_wa", "test_ua",
                  "test_ua_authors", "lr"]
RESULT_KEYS = ["selected_epoch", "test", "valid", "authors", "last_epoch"]

# Training pins torch's thread count from params.yaml env: restore it for later test modules.
pytestmark = pytest.mark.usefixtures("restore_threads")


def unit(root: Path, experiment: str, seed: int = 7, fold: int = 0) -> Path:
    return root / "artifacts/runs" / experiment / f"seed_{seed}" / f"fold_{fold}"


def outcome(directory: Path) -> tuple:
    """Returns what must repeat exactly: predictions bytes, per-epoch metrics, result minus timing and env."""
    log = pd.read_csv(directory / "log.csv")[METRIC_COLUMNS].fillna(-1.0)  # NaN != NaN
    result = json.loads((directory / "result.json").read_text())
    return (directory / "predictions.csv").read_bytes(), log.to_dict("list"), {k: result.get(k) for k in RESULT_KEYS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fake study with its authors-like and honest experiments trained and evaluated once."""
    root = tmp_path_factory.mktemp("study")
    fake_study.write_study(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert cli.main(["resolve"]) == 0
        for verb in ("train", "evaluate"):
            for experiment in ("authors", "honest"):
                assert cli.main([verb, "--experiment", experiment]) == 0
    return root


def test_units_write_their_files_and_done_last(trained):
    for experiment in ("authors", "honest"):
        for fold in (0, 1):
            directory = unit(trained, experiment, fold=fold)
            names = sorted(p.name for p in directory.iterdir())
            assert names == ["checkpoint.pt", "done", "fused.npy", "log.csv", "predictions.csv", "result.json"]
            assert (directory / "done").stat().st_mtime_ns >= (directory / "result.json").stat().st_mtime_ns
            log = pd.read_csv(directory / "log.csv")
            # No wall times in the unit's files (DVC caches them): they are in its provenance record.
            assert list(log.columns) == METRIC_COLUMNS
            provenance = json.loads((trained / "artifacts/provenance/train" / experiment /
                                     f"seed_7_fold_{fold}.json").read_text())
            assert len(provenance["epoch_seconds"]) == 3 and provenance["commit"]
            assert log["epoch"].tolist() == [1, 2, 3]  # epochs count from 1, as the log lines do
            predictions = pd.read_csv(directory / "predictions.csv")
            assert list(predictions.columns) == ["utt_id", "fold", "seed", "true", "predicted"] + [
                f"p_{c}" for c in fake_study.CLASSES]
            assert predictions[[f"p_{c}" for c in fake_study.CLASSES]].sum(axis=1).round(4).eq(1).all()
            checkpoint = torch.load(directory / "checkpoint.pt", weights_only=True)
            result = json.loads((directory / "result.json").read_text())
            assert checkpoint["epoch"] == result["selected_epoch"]
            assert result["test"]["n"] == len(predictions)
            fused = np.load(directory / "fused.npy", allow_pickle=False)
            assert fused.dtype == np.float32 and fused.shape[0] == len(predictions) and np.isfinite(fused).all()


def test_lr_drops_after_the_listed_epochs(trained):
    # Tiny profile: lr 5e-3, divided by 10 after epochs 1 and 2.
    log = pd.read_csv(unit(trained, "authors") / "log.csv")
    assert log["lr"].tolist() == pytest.approx([5e-3, 5e-4, 5e-5])
    # Paper profile, as the authors' loop: epochs 1-11 at 5e-4, 12-21 at 5e-5, 22-30 at 5e-6.
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=5e-4)
    schedule = train.lr_schedule(optimizer, train.TrainParams())
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([5e-4] * 11 + [5e-5] * 10 + [5e-6] * 9)


def test_a_last_batch_of_one_is_left_out(tmp_path):
    # 9 rows at batch 8: batch norm after global pooling cannot train on the ninth alone.
    ids = fake_study.utt_ids("iemocap", 9)
    fake_study.write_features(tmp_path / "f.pt", ids)
    rows = pd.DataFrame({"utt_id": ids, "label": [fake_study.label_of(u) for u in ids], "gender": "F", "line": 2})
    dataset = UtteranceDataset(load_features([tmp_path / "f.pt"]), rows, fake_study.CLASSES, tmp_path / "s.csv")
    loader = make_loader(dataset, 8, True, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build(ModelParams(**{**fake_study.TINY_MODEL, "cnn_channels": (4, 4, 4, 4, 8)}))
    loss_fn = MultiTaskLoss(LossParams(), len(fake_study.CLASSES))
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()))
    options = train.Options(torch.device("cpu"), amp=False, compile=False)
    loss, true, pred = train.train_epoch(model, loss_fn, optimizer, loader, options)
    assert len(true) == len(pred) == 8 and loss > 0


def test_test_max_keeps_the_authors_maxima(trained):
    for fold in (0, 1):
        directory = unit(trained, "authors", fold=fold)
        log = pd.read_csv(directory / "log.csv")
        result = json.loads((directory / "result.json").read_text())
        # The authors' valid rows are the test rows: scored once, logged in both columns.
        assert log["valid_wa"].tolist() == log["test_wa"].tolist()
        best = int(log["test_wa"].idxmax())  # the first epoch of maximum WA (row index, from 0)
        assert result["selected_epoch"] == log["epoch"][best] == best + 1
        assert result["authors"]["wa_epoch"] == best + 1
        assert result["authors"]["wa"] == pytest.approx(log["test_wa"].max())
        assert result["authors"]["ua"] == pytest.approx(log["test_ua_authors"].max())
        assert result["last_epoch"]["wa"] == pytest.approx(log["test_wa"].iloc[-1])
        # The predictions written are the selected checkpoint's: they reproduce that epoch's score.
        assert result["test"]["wa"] == pytest.approx(log["test_wa"][best])


def test_valid_selection_never_scores_the_test_rows_per_epoch(trained):
    for fold in (0, 1):
        directory = unit(trained, "honest", fold=fold)
        log = pd.read_csv(directory / "log.csv")
        result = json.loads((directory / "result.json").read_text())
        assert log["test_wa"].isna().all() and log["test_ua"].isna().all()
        best = max(range(len(log)), key=lambda e: (log["valid_ua"][e], log["valid_wa"][e], -e))
        assert result["selected_epoch"] == best + 1
        assert "authors" not in result
        split = pd.read_csv(trained / "artifacts/splits/honest.csv")
        test = split[(split["fold"] == fold) & (split["role"] == "test")]
        predictions = pd.read_csv(directory / "predictions.csv")
        assert predictions["utt_id"].tolist() == test["utt_id"].tolist()
        assert predictions["true"].tolist() == test["label"].tolist()


def test_evaluate_writes_the_metrics_the_units_imply(trained):
    metrics = json.loads((trained / "results/metrics/authors.json").read_text())
    for key in ("experiment", "model", "protocol", "train_corpus", "test_corpus", "labels", "seeds", "wa", "ua",
                "per_fold", "confusion", "selection", "profile", "params_hash", "env", "authors", "last_epoch"):
        assert key in metrics
    assert metrics["labels"] == fake_study.CLASSES and metrics["seeds"] == [7]
    for f in metrics["per_fold"]:
        result = json.loads((unit(trained, "authors", fold=f["fold"]) / "result.json").read_text())
        assert f["wa"] == pytest.approx(result["test"]["wa"], abs=1e-4)
        assert f["ua"] == pytest.approx(result["test"]["ua"], abs=1e-4)
    pooled = pd.read_csv(trained / "results/predictions/authors.csv")
    assert len(pooled) == metrics["n"] == sum(f["n"] for f in metrics["per_fold"])
    honest = json.loads((trained / "results/metrics/honest.json").read_text())
    assert honest["selection"] == "valid" and "authors" not in honest


@pytest.mark.reliability("determinism")
def test_same_seed_gives_identical_results(trained, tmp_path, monkeypatch):
    shutil.copytree(trained / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copytree(trained / "artifacts/splits", tmp_path / "artifacts/splits")
    shutil.copy(trained / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--experiment", "authors", "--fold", "0"]) == 0
    assert outcome(unit(tmp_path, "authors")) == outcome(unit(trained, "authors"))
    assert not unit(tmp_path, "authors", fold=1).exists()


@pytest.mark.reliability("determinism")
def test_units_in_worker_processes_match_units_trained_here(trained, tmp_path, monkeypatch):
    shutil.copytree(trained / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copytree(trained / "artifacts/splits", tmp_path / "artifacts/splits")
    fake_study.write_params(tmp_path / "params.yaml", train={**fake_study.TINY_TRAIN, "jobs": 2})
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["env"]["threads"] = 2  # two jobs of one thread each: the fixture's units ran on one thread too
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--experiment", "honest"]) == 0
    for fold in (0, 1):
        assert outcome(unit(tmp_path, "honest", fold=fold)) == outcome(unit(trained, "honest", fold=fold))


@pytest.mark.reliability("interruption")
def test_a_killed_unit_resumes_to_the_same_result(trained, tmp_path, monkeypatch):
    shutil.copytree(trained / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copytree(trained / "artifacts/splits", tmp_path / "artifacts/splits")
    shutil.copy(trained / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    real_epoch = train.train_epoch
    calls = []

    def killed_in_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(train, "train_epoch", killed_in_second_epoch)
    assert cli.main(["train", "--experiment", "honest", "--fold", "1"]) == 130
    directory = unit(tmp_path, "honest", fold=1)
    assert (directory / "resume.pt").is_file() and not (directory / "done").exists()

    calls.clear()
    monkeypatch.setattr(train, "train_epoch", lambda *args: (calls.append(1), real_epoch(*args))[1])
    assert cli.main(["train", "--experiment", "honest", "--fold", "1"]) == 0
    assert len(calls) == 2  # epochs 1 and 2 only: epoch 0 came from resume.pt
    assert not (directory / "resume.pt").exists()
    assert outcome(directory) == outcome(unit(trained, "honest", fold=1))

    calls.clear()
    assert cli.main(["train", "--experiment", "honest", "--fold", "1"]) == 0
    assert calls == []  # done under the same settings: nothing to train


@pytest.mark.reliability("interruption")
def test_changed_settings_retrain_a_done_unit(trained, tmp_path, monkeypatch):
    shutil.copytree(trained / "artifacts", tmp_path / "artifacts")
    fake_study.write_params(tmp_path / "params.yaml", train={**fake_study.TINY_TRAIN, "epochs": 1})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["resolve"]) == 0
    assert cli.main(["evaluate", "--experiment", "authors"]) == 1  # the units were trained for 3 epochs
    assert cli.main(["train", "--experiment", "authors", "--fold", "0"]) == 0
    assert len(pd.read_csv(unit(tmp_path, "authors") / "log.csv")) == 1


def test_cross_corpus_reads_two_feature_files(trained, tmp_path, monkeypatch):
    shutil.copytree(trained / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copytree(trained / "artifacts/splits", tmp_path / "artifacts/splits")
    fake_study.write_params(tmp_path / "params.yaml", train={**fake_study.TINY_TRAIN, "epochs": 1})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["resolve"]) == 0
    assert cli.main(["train", "--experiment", "cross"]) == 0
    assert cli.main(["evaluate", "--experiment", "cross"]) == 0
    metrics = json.loads((tmp_path / "results/metrics/cross.json").read_text())
    assert (metrics["train_corpus"], metrics["test_corpus"]) == ("iemocap", "msp-improv")
    predictions = pd.read_csv(tmp_path / "results/predictions/cross.csv")
    assert predictions["utt_id"].str.startswith("msp-improv/").all()
    assert metrics["wa"]["fold_std"] is None  # one unit


@pytest.mark.reliability("manifest")
def test_a_split_row_without_features_stops_training(trained, tmp_path, monkeypatch, capsys):
    shutil.copytree(trained / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copy(trained / "params.yaml", tmp_path / "params.yaml")
    ids = fake_study.utt_ids("iemocap", 48) + ["iemocap/ghost"]
    rows = fake_study.split_rows(ids[:-1], ids[:-1], 2, valid_is_test=True)
    rows.loc[rows.index[-1], "utt_id"] = "iemocap/ghost"  # the last row: fold 1, role valid
    csv = fake_study.write_split(tmp_path / "artifacts/splits", "random", rows, "test_max")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--experiment", "authors", "--fold", "1"]) == 1
    line = len(csv.read_text().splitlines())
    assert f"random.csv:{line}: utt_id 'iemocap/ghost' is not in the feature file(s)" in capsys.readouterr().err


def test_experiments_override_only_what_differs(tmp_path):
    path = tmp_path / "params.yaml"
    same = {"protocol": "random", "features": {"train": "iemocap", "test": "iemocap"}}
    experiments = {
        "plain": same,
        "more-seeds": {**same, "train": {"seeds": [1, 2]}, "folds": [1]},
        "ablated": {**same, "model_params": {"dyrelu": False}, "train": {"loss": {"center_weight": 0.0}}},
    }
    fake_study.write_params(path, experiments=experiments)
    plain, more, ablated = (train.load_config(e, path) for e in experiments)
    assert ablated.model_params.dyrelu is False
    assert ablated.model_params.lstm_hidden == fake_study.TINY_MODEL["lstm_hidden"]  # from the profile
    assert ablated.train.loss.center_weight == 0.0 and ablated.train.loss.gender_weight == 0.3
    assert more.train.seeds == (1, 2) and more.train.epochs == fake_study.TINY_TRAIN["epochs"]
    assert more.spec.folds == (1,)
    # A unit's result does not depend on which other seeds and folds run beside it.
    assert plain.hash() == more.hash() != ablated.hash()


@pytest.mark.parametrize(
    "experiment, message",
    [
        ({"protocol": "random", "features": {"train": "iemocap", "test": "iemocap"}, "model": "resnet"},
         r"params\.yaml:\d+: model 'resnet': no module resnet"),
        ({"protocol": "random", "features": {"train": "iemocap"}},
         r"params\.yaml:\d+: .*lacks the required key 'test'"),
        ({"protocol": "random", "features": {"train": "iemocap", "test": "iemocap"}, "train": {"epoch": 3}},
         r"params\.yaml:\d+: unknown key 'experiments\.bad\.train\.epoch'"),
        ({"protocol": "random", "features": {"train": "iemocap", "test": "iemocap"},
          "model_params": {"fusion": "sum"}}, r"params\.yaml:\d+: 'experiments\.bad\.model_params\.fusion' must be"),
    ],
)
def test_bad_experiments_name_file_and_line(tmp_path, experiment, message):
    path = tmp_path / "params.yaml"
    fake_study.write_params(path, experiments={"bad": experiment})
    with pytest.raises(ParamsError, match=message):
        train.load_config("bad", path)
    with pytest.raises(ParamsError, match=r"unknown experiment 'nope'; known: bad"):
        train.load_config("nope", path)


def test_repo_experiments_resolve_under_both_profiles(tmp_path):
    repo = Path(__file__).resolve().parents[1] / "params.yaml"
    data = yaml.safe_load(repo.read_text())
    assert {"iemocap-authors", "iemocap-loso", "msp-improv-authors", "msp-improv-loso", "iemocap-to-msp-improv",
            "msp-improv-to-iemocap"} <= set(data["experiments"])
    for profile in ("paper", "quick"):
        data["profile"] = profile
        path = tmp_path / f"{profile}.yaml"
        path.write_text(yaml.safe_dump(data))
        for experiment in data["experiments"]:
            config = train.load_config(experiment, path)
            assert config.profile == profile
            assert config.spec.protocol in data["splits"]["protocols"]
    paper = train.load_config("iemocap-authors", tmp_path / "paper.yaml").train
    # The paper profile trains the authors' settings, over 5 seeds (the authors' own first) for every experiment.
    assert dataclasses.replace(paper, seeds=(987654,), secondary_seeds=1) == train.TrainParams()
    assert len(paper.seeds) == 5 and paper.seeds[0] == 987654 and paper.secondary_seeds == 5
    # The quick headline: 2 seeds x every fold, twice the 5 units of each secondary experiment.
    quick = train.load_config("iemocap-authors", tmp_path / "quick.yaml").train
    assert len(quick.seeds) == 2 and quick.secondary_seeds == 1 and quick.secondary_folds is None
    # Every variant the report lists runs under both IEMOCAP protocols.
    variants = {}
    for name, entry in data["experiments"].items():
        variants.setdefault(entry.get("variant", "sdcaff"), set()).add(entry["protocol"])
    assert all({"iemocap-authors", "iemocap-loso"} <= protocols for protocols in variants.values())
    assert {"cnn", "lstm", "crnn", "ecapa", "mfcc-linear", "no-dyrelu", "no-silence"} <= set(variants)


def test_secondary_groups_train_fewer_seeds_and_folds(tmp_path):
    path = tmp_path / "params.yaml"
    fake_study.write_params(path, experiments={
        "main": {"protocol": "p", "features": {"train": "f", "test": "f"}},
        "abl": {"protocol": "p", "features": {"train": "f", "test": "f"}, "group": "ablation", "variant": "x"},
    }, train={"seeds": [1, 2, 3], "secondary_seeds": 2, "secondary_folds": [0, 2, 7]})
    split = SimpleNamespace(sidecar={"folds": 3}, csv_path=Path("p.csv"))
    assert train.plan(train.load_config("main", path), split) == [(s, f) for s in (1, 2, 3) for f in (0, 1, 2)]
    # Folds a protocol lacks (7) are skipped: a one-fold cross-corpus protocol keeps its fold.
    assert train.plan(train.load_config("abl", path), split) == [(1, 0), (1, 2), (2, 0), (2, 2)]
    config = train.load_config("abl", path)
    assert config.hash() == train.load_config("main", path).hash()  # which units run is not a unit setting
    fake_study.write_params(path, experiments={
        "odd": {"protocol": "p", "features": {"train": "f", "test": "f"}, "folds": [1, 9]},
        "gone": {"protocol": "p", "features": {"train": "f", "test": "f"}, "group": "ablation"},
    }, train={"seeds": [1], "secondary_folds": [7]})
    with pytest.raises(ParamsError, match=r"experiments.odd.folds: \[9\] not among the folds \[0, 1, 2\]"):
        train.plan(train.load_config("odd", path), split)
    with pytest.raises(ParamsError, match=r"train.secondary_folds: none of the folds \[0, 1, 2\]"):
        train.plan(train.load_config("gone", path), split)


def test_unknown_seed_or_fold_is_refused(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    assert cli.main(["train", "--experiment", "authors", "--fold", "5"]) == 1
    assert "--fold [5]: not among experiment 'authors' units" in capsys.readouterr().err
    assert cli.main(["train", "--experiment", "authors", "--amp", "--device", "cpu"]) == 1
    assert "--amp" in capsys.readouterr().err


def _swap_labels(root: Path) -> None:
    """Swaps neutral and sad in the honest split, as a label-file edit upstream would."""
    path = root / "artifacts/splits/honest.csv"
    rows = pd.read_csv(path)
    rows["label"] = rows["label"].map({"neutral": "sad", "sad": "neutral"}).fillna(rows["label"])
    rows.to_csv(path, index=False, lineterminator="\n")


def _new_features(root: Path) -> None:
    """Rewrites the feature file with other values for the same utterances, as a features setting would."""
    fake_study.write_features(root / "artifacts/features/iemocap.pt", fake_study.utt_ids("iemocap", 48), seed=5)


def _new_folds(root: Path) -> None:
    """Rewrites the honest split with its folds drawn the other way round, as a protocol change would."""
    ids = fake_study.utt_ids("iemocap", 48)
    rows = fake_study.split_rows(ids, ids, 2, valid_is_test=False)
    rows["fold"] = 1 - rows["fold"]
    rows = rows.sort_values(["fold", "role", "utt_id"], kind="mergesort", ignore_index=True)
    fake_study.write_split(root / "artifacts/splits", "honest", rows, "valid")


@pytest.mark.reliability("stale cache")
@pytest.mark.parametrize("change", [_swap_labels, _new_features, _new_folds], ids=["labels", "features", "split"])
def test_a_unit_whose_inputs_changed_is_refused_then_retrained_to_the_fresh_numbers(trained, tmp_path, monkeypatch,
                                                                                  capsys, change):
    # A persisted unit under the same settings but other inputs: evaluate refuses it, train retrains it.
    stale, clean = tmp_path / "stale", tmp_path / "clean"
    shutil.copytree(trained, stale)
    change(stale)
    monkeypatch.chdir(stale)
    assert cli.main(["evaluate", "--experiment", "honest"]) == 1
    err = capsys.readouterr().err
    assert "seed_7/fold_0: unit was trained on other inputs (artifacts/" in err and "sdcaff train" in err
    assert cli.main(["train", "--experiment", "honest"]) == 0
    assert cli.main(["evaluate", "--experiment", "honest"]) == 0
    # A clean run on the changed inputs gives the same bytes: nothing of the old units survived.
    clean.mkdir()
    for name in ("artifacts/features", "artifacts/splits", "params.yaml"):
        (shutil.copytree if (stale / name).is_dir() else shutil.copy)(stale / name, clean / name)
    monkeypatch.chdir(clean)
    assert cli.main(["resolve"]) == 0
    assert cli.main(["train", "--experiment", "honest"]) == 0
    assert cli.main(["evaluate", "--experiment", "honest"]) == 0
    for fold in (0, 1):
        assert outcome(unit(stale, "honest", fold=fold)) == outcome(unit(clean, "honest", fold=fold))
    for name in ("results/metrics/honest.json", "results/predictions/honest.csv"):
        assert (stale / name).read_bytes() == (clean / name).read_bytes(), name
    assert (stale / "results/metrics/honest.json").read_bytes() != (trained / "results/metrics/honest.json").read_bytes()


@pytest.mark.reliability("stale cache")
def test_a_resume_state_saved_on_other_inputs_is_not_resumed(trained, tmp_path, monkeypatch, caplog):
    shutil.copytree(trained, tmp_path / "study")
    root = tmp_path / "study"
    monkeypatch.chdir(root)
    config = train.load_config("honest")
    directory = unit(root, "honest", fold=0)
    # A unit killed after its first epoch under the current inputs would resume ...
    real_epoch = train.train_epoch
    shutil.rmtree(directory)
    monkeypatch.setattr(train, "train_epoch", _dying_after(1, real_epoch))
    assert cli.main(["train", "--experiment", "honest", "--fold", "0"]) == 130
    assert (directory / "resume.pt").is_file()
    # ... but its inputs change before the rerun: it starts again from epoch 0.
    _new_features(root)
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    with caplog.at_level("INFO"):
        assert cli.main(["train", "--experiment", "honest", "--fold", "0"]) == 0
    assert "resuming" not in caplog.text and "training it anew" in caplog.text
    assert config.train.epochs == len(pd.read_csv(directory / "log.csv"))


def _dying_after(epochs: int, real):
    """Returns train_epoch that raises KeyboardInterrupt once `epochs` epochs have run (a kill)."""
    count = {"n": 0}

    def epoch(*args, **kwargs):
        if count["n"] == epochs:
            raise KeyboardInterrupt
        count["n"] += 1
        return real(*args, **kwargs)
    return epoch


def test_the_key_covers_settings_inputs_and_code_but_not_which_units_run(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    config = train.load_config("honest")
    split = read_split(train.split_path(config))
    key = train.unit_key(config, split)
    assert set(key) == {"config", "inputs", "code", "versions"}
    assert set(key["inputs"]) == {"artifacts/features/iemocap.pt", "artifacts/splits/honest.csv",
                                  "artifacts/splits/honest.json"}
    assert key["inputs"]["artifacts/features/iemocap.pt"] == hashlib.md5(
        (trained / "artifacts/features/iemocap.pt").read_bytes()).hexdigest()  # DVC's own checksum
    more = dataclasses.replace(config, train=dataclasses.replace(config.train, seeds=(7, 8), jobs=2))
    assert train.unit_key(more, split) == key
    # Another model module's code is another key, even at the same settings.
    assert digest.code_digest(["sdcaff.model"]) != digest.code_digest(["baselines.ecapa"])
    assert key["code"] == digest.code_digest([*train.TRAINING_CODE, "sdcaff.model"])


def test_train_stages_depend_on_the_code_the_key_covers():
    # dvc.yaml's train deps and TRAINING_CODE name the same files, and each stage its own model module only.
    repo = Path(__file__).resolve().parents[1]
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["do"]
    code = [d for d in stage["deps"] if not d.startswith("artifacts/")]
    assert code == [m.replace(".", "/") + ".py" for m in train.TRAINING_CODE] + ["${item.model}"]
    experiments = yaml.safe_load((repo / "params.yaml").read_text())["experiments"]
    for name, entry in experiments.items():
        assert (repo / entry["model"]).exists(), name  # dvc.yaml reads the path, so every entry names one
        assert train.module_name(entry["model"]) in {"sdcaff.model", "baselines.ecapa",
                                                          "baselines.mfcc_linear", "baselines.ssl"}


@pytest.mark.reliability("params")
@pytest.mark.parametrize("override, message", [
    ({"epochs": 0}, r"epochs must be at least 1, got 0"),
    ({"epochs": -1}, r"epochs must be at least 1, got -1"),
    ({"batch_size": 1}, r"batch_size must be at least 2, got 1"),
    ({"seeds": []}, r"seeds must list at least one seed"),
    ({"seeds": [7, 7]}, r"seeds \[7, 7\] repeat a seed"),
    ({"lr": -1.0e-3}, r"lr must be a finite number > 0, got -0.001"),
    ({"lr": float("nan")}, r"lr must be a finite number > 0, got nan"),
    ({"weight_decay": -1.0}, r"weight_decay must be a finite number >= 0"),
    ({"jobs": 0}, r"jobs and secondary_seeds must be at least 1"),
])
def test_out_of_range_training_settings_name_file_and_line(tmp_path, override, message):
    path = tmp_path / "params.yaml"
    fake_study.write_params(path, train={**fake_study.TINY_TRAIN, **override})
    with pytest.raises(ParamsError, match=r"params\.yaml:\d+: experiment 'authors' train .*" + message):
        train.load_config("authors", path)


@pytest.mark.reliability("params")
def test_zero_threads_is_refused_not_silently_one(tmp_path):
    path = tmp_path / "params.yaml"
    fake_study.write_params(path)
    data = yaml.safe_load(path.read_text())
    data["env"]["threads"] = 0
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ParamsError, match=r"params\.yaml:\d+: env.threads must be at least 1, got 0"):
        train.load_config("authors", path)


def test_training_logs_progress_lines_a_log_file_can_show(trained, tmp_path, monkeypatch, caplog):
    shutil.copytree(trained / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copytree(trained / "artifacts/splits", tmp_path / "artifacts/splits")
    shutil.copy(trained / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "PROGRESS_EVERY_S", 0.0)  # a line after every batch
    with caplog.at_level("INFO", logger="sdcaff.train"):
        assert cli.main(["train", "--experiment", "honest", "--fold", "0"]) == 0
    lines = [r.getMessage() for r in caplog.records]
    first = [m for m in lines if "first batch after" in m]
    assert len(first) == 1 and "honest seed 7 fold 0 epoch 1/3" in first[0] and "batches/s" in first[0]
    assert any("epoch 2/3: batch 1/" in m and "epoch ETA" in m for m in lines)
    assert any("epoch 3/3: loss" in m and "unit ETA 0 s" in m for m in lines)
    assert any("1 of 1 units, ETA 0 s" in m for m in lines)
    assert lines.index(first[0]) < min(i for i, m in enumerate(lines) if "epoch 1/3: loss" in m)
