import json
import logging
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import fake_study
from sdcaff import cli, plots

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELS = ["neutral", "sad", "angry", "happy"]

# Training pins torch's thread count from params.yaml env: restore it for later test modules.
pytestmark = pytest.mark.usefixtures("restore_threads")


def record(experiment: str, group: str = "headline", variant: str = "sdcaff", units=((7, 0), (7, 1))) -> dict:
    """Returns a small metrics record in the evaluate stage's schema (the keys the figures read)."""
    per_fold = [{"seed": s, "fold": f, "wa": 50.0 + 3 * f + s % 2, "ua": 45.0 + 2 * f, "n": 8, "n_train": 30,
                 "selected_epoch": f + 1, "unit_hash": unit_hash(s, f)} for s, f in units]
    return {
        "experiment": experiment, "model": "sdcaff", "variant": variant, "group": group,
        "protocol": experiment if group in ("headline", "cross-corpus") else "iemocap-authors",
        "labels": LABELS, "seeds": sorted({s for s, _ in units}), "n": 8 * len(units),
        "wa": {"pooled": 51.5, "fold_mean": 52.0, "fold_std": 2.1},
        "ua": {"pooled": 46.0, "fold_mean": 46.0, "fold_std": 1.4},
        "per_fold": per_fold,
        # The sad row is empty: a class absent from the test rows must not break the normalisation.
        "confusion": [[5, 1, 0, 2], [0, 0, 0, 0], [1, 0, 3, 0], [2, 0, 1, 1]],
    }


def unit_hash(seed: int, fold: int) -> str:
    return f"hash-{seed}-{fold}"


def write_log(directory: Path, epochs: int, test_logged: bool, done: str | None = None) -> None:
    """Writes a unit's log.csv with the train stage's columns (test columns empty unless logged) and its
    `done` marker: the hash a record of it names unless `done` says otherwise."""
    directory.mkdir(parents=True, exist_ok=True)
    seed, fold = int(directory.parent.name.split("_")[1]), int(directory.name.split("_")[1])
    (directory / "done").write_text((done or unit_hash(seed, fold)) + "\n")
    rows = [{"epoch": e, "loss": 2.0 - 0.3 * e, "train_wa": 40.0 + e, "train_ua": 38.0 + e, "valid_wa": 35.0 + e,
             "valid_ua": 33.0 + e, "test_wa": 36.0 + e if test_logged else None,
             "test_ua": 34.0 + e if test_logged else None, "test_ua_authors": 34.0 + e if test_logged else None,
             "lr": 1e-3} for e in range(1, epochs + 1)]
    pd.DataFrame(rows).to_csv(directory / "log.csv", index=False, lineterminator="\n")


def assert_png(path: Path) -> None:
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def snapshot(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A fake study with one honest experiment trained (fold 0, 2 epochs), evaluated, and a speaker manifest."""
    root = tmp_path_factory.mktemp("study")
    fake_study.write_study(root)
    same = {"train": "iemocap", "test": "iemocap"}
    fake_study.write_params(root / "params.yaml", experiments={
        "honest": {"protocol": "honest", "features": same, "folds": [0], "train": {"epochs": 2}}})
    ids = fake_study.utt_ids("iemocap", 48)
    manifest = root / "artifacts/manifest/iemocap.csv"
    manifest.parent.mkdir(parents=True)
    pd.DataFrame({"utt_id": ids, "speaker": [f"Ses0{int(u[-4:]) % 3 + 1}_F" for u in ids]}).to_csv(manifest,
                                                                                                   index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert cli.main(["resolve"]) == 0
        for verb in ("train", "evaluate"):
            assert cli.main([verb, "--experiment", "honest"]) == 0
    return root


def test_draw_writes_every_figure_and_repeats_byte_for_byte(study, monkeypatch):
    monkeypatch.chdir(study)
    records = {"honest": json.loads((study / "results/metrics/honest.json").read_text())}
    p = plots.PlotsParams(confusion=("honest",), tsne_experiment="honest", curves=("honest",), dpi=60)
    first = plots.draw(records, study / "plots_a", p, runs_dir=Path("artifacts/runs"))
    assert [f.name for f in first] == ["confusion_honest.png", "curves_honest.png", "per_fold.png", "per_speaker.png",
                                     "tsne.png"]
    for path in first:
        assert_png(path)
    second = plots.draw(records, study / "plots_b", p, runs_dir=Path("artifacts/runs"))
    assert snapshot(first) == snapshot(second)
    # No stray temporary files beside the figures.
    assert sorted(f.name for f in (study / "plots_a").iterdir()) == [f.name for f in first]


def test_fused_vectors_are_the_units_own_file_with_the_speakers_evaluate_named(study, monkeypatch):
    monkeypatch.chdir(study)
    record = json.loads((study / "results/metrics/honest.json").read_text())
    directory = Path("artifacts/runs/honest/seed_7/fold_0")
    vectors, frame = plots.fused_vectors("honest", record, directory, 7, 0, Path("results/predictions"))
    predictions = pd.read_csv(directory / "predictions.csv")
    keep = ~predictions["utt_id"].duplicated().to_numpy()
    assert vectors.tobytes() == np.load(directory / "fused.npy")[keep].tobytes()
    assert len(frame) == keep.sum() == vectors.shape[0] and vectors.shape[1] > 1
    assert frame["emotion"].tolist() == predictions["true"][keep].tolist()
    assert list(frame["emotion"].cat.categories) == fake_study.CLASSES
    assert sorted(frame["speaker"].unique()) == ["Ses01_F", "Ses02_F", "Ses03_F"]


def test_plots_import_nothing_from_training_models_or_corpora():
    # A fresh interpreter: what `import sdcaff.report` pulls in, the report stage needs at run time.
    code = ("import sys, sdcaff.report, sdcaff.check\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('sdcaff.train', 'sdcaff.model', "
            "'sdcaff.data', 'baselines')))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_tsne_leaves_out_a_unit_that_is_missing_stale_or_unnamed(study, monkeypatch, caplog, tmp_path):
    monkeypatch.chdir(study)
    records = {"honest": json.loads((study / "results/metrics/honest.json").read_text())}
    p = plots.PlotsParams(tsne_experiment="honest", tsne_fold=1, dpi=60)
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert plots.draw_tsne(records, p, Path("artifacts/runs"), Path("results/predictions"), tmp_path / "t.png") is None
    assert "fold_1: not a unit of results/metrics/honest.json: t.png left out" in caplog.text
    caplog.clear()
    p = plots.PlotsParams(tsne_experiment="honest", dpi=60)
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert plots.draw_tsne(records, p, Path("artifacts/runs"), study / "nowhere", tmp_path / "t.png") is None
    assert "no predictions to name the speakers" in caplog.text
    caplog.clear()
    stale = json.loads(json.dumps(records))
    stale["honest"]["per_fold"][0]["unit_hash"] = "a-run-since-replaced"
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert plots.draw_tsne(stale, p, Path("artifacts/runs"), Path("results/predictions"), tmp_path / "t.png") is None
    assert "trained on other inputs, settings or code than results/metrics/honest.json reports" in caplog.text
    assert not (tmp_path / "t.png").exists()


def test_records_only_draw_confusions_and_per_fold_and_warn_for_the_rest(tmp_path, caplog):
    records = {name: record(name) for name in ("iemocap-authors", "iemocap-loso")}
    records["iemocap-to-msp-improv"] = record("iemocap-to-msp-improv", group="cross-corpus")
    records["cnn-iemocap-authors"] = record("cnn-iemocap-authors", group="comparison", variant="cnn")
    records["ecapa-iemocap-authors"] = record("ecapa-iemocap-authors", group="baseline", variant="ecapa")
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        written = plots.draw(records, tmp_path / "out", plots.PlotsParams(dpi=50), runs_dir=tmp_path / "runs",
                             predictions_dir=tmp_path / "predictions")
    assert [w.name for w in written] == [
        "confusion_cnn-iemocap-authors.png", "confusion_iemocap-authors.png", "confusion_iemocap-loso.png",
        "confusion_iemocap-to-msp-improv.png", "per_fold.png"]
    for path in written:
        assert_png(path)
    assert "curves_iemocap-authors.png left out" in caplog.text
    assert "iemocap-loso/seed_7/fold_0: not trained: tsne.png left out" in caplog.text


def test_curves_use_the_logs_of_the_records_units_only(tmp_path, caplog):
    rec = record("iemocap-authors", units=((7, 0), (7, 1), (8, 0), (8, 1)))
    write_log(tmp_path / "runs/iemocap-authors/seed_7/fold_0", 4, test_logged=True)
    write_log(tmp_path / "runs/iemocap-authors/seed_8/fold_0", 4, test_logged=True)
    # A unit retrained since the metrics were written (an aborted run of another profile): not these metrics'.
    write_log(tmp_path / "runs/iemocap-authors/seed_8/fold_1", 1, test_logged=True, done="another-run")
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        logs = plots.read_logs("iemocap-authors", rec, tmp_path / "runs")
        path = plots.draw_curves("iemocap-authors", rec, tmp_path / "runs", tmp_path / "c.png", 50)
    assert sorted(set(zip(logs["seed"], logs["fold"]))) == [(7, 0), (8, 0)]
    assert logs["epoch"].min() == 1  # epochs count from 1, as selected_epoch does
    assert path == tmp_path / "c.png"
    assert_png(path)
    assert "2 of 4 units' training logs left out" in caplog.text
    rec["per_fold"][0].pop("unit_hash")
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert sorted(plots.unit_directories("iemocap-authors", rec, tmp_path / "runs")[0]) == [(8, 0)]
    found, left_out = plots.unit_directories("iemocap-authors", rec, tmp_path / "runs")
    assert any("seed_8/fold_1: trained on other inputs" in line for line in left_out)
    assert any("seed_7/fold_1: not trained" in line for line in left_out)
    assert any("seed_7/fold_0: results/metrics/iemocap-authors.json records no unit_hash" in line for line in left_out)
    caplog.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert plots.draw_curves("iemocap-authors", rec, tmp_path / "none", tmp_path / "d.png", 50) is None
    assert "no training logs" in caplog.text and not (tmp_path / "d.png").exists()


def test_a_record_without_confusion_is_an_error_naming_its_metrics_file(tmp_path):
    bad = record("iemocap-loso")
    del bad["confusion"]
    with pytest.raises(plots.PlotsError, match=r"results/metrics/iemocap-loso\.json: missing key 'confusion'"):
        plots.draw({"iemocap-loso": bad}, tmp_path, plots.PlotsParams(dpi=50))
    bad = record("iemocap-loso")
    bad["confusion"] = [[1, 2], [3, 4]]
    with pytest.raises(plots.PlotsError, match="confusion is"):
        plots.draw_confusion("iemocap-loso", bad, tmp_path / "c.png", 50)
    assert not (tmp_path / "c.png").exists()


def test_confusion_choice_default_and_explicit(caplog):
    records = {"iemocap-authors": record("iemocap-authors"),
               "lstm-iemocap-loso": record("lstm-iemocap-loso", group="comparison", variant="lstm"),
               "add-iemocap-authors": record("add-iemocap-authors", group="comparison", variant="add")}
    assert plots.confusion_experiments(records, plots.PlotsParams()) == ["iemocap-authors", "lstm-iemocap-loso"]
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        chosen = plots.confusion_experiments(records, plots.PlotsParams(confusion=("add-iemocap-authors", "typo")))
    assert chosen == ["add-iemocap-authors"]
    assert "no metrics for typo" in caplog.text


def test_recall_is_row_normalised_and_empty_rows_stay_zero():
    recall = plots.recall_percent(np.array([[3, 1], [0, 0]]))
    np.testing.assert_allclose(recall, [[75.0, 25.0], [0.0, 0.0]])


def test_primary_order_and_groups_of_older_records():
    old = {name: {k: v for k, v in record(name).items() if k not in ("group", "variant")}
           for name in ("msp-improv-to-iemocap", "iemocap-loso", "iemocap-authors")}
    old["cnn-iemocap-authors"] = {**old["iemocap-authors"], "experiment": "cnn-iemocap-authors"}
    assert plots.primary(old) == ["iemocap-authors", "iemocap-loso", "msp-improv-to-iemocap"]


def test_tsne_perplexity_is_lowered_only_for_small_sets():
    assert plots.tsne_perplexity(30.0, 1000) == 30.0
    assert plots.tsne_perplexity(30.0, 25) == 8.0
    assert plots.tsne_perplexity(30.0, 2) == 1.0
