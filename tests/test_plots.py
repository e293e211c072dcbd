import json
import logging
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

import fake_study
from sdcaff import cli, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELS = ["neutral", "sad", "angry", "happy"]

# Training pins torch's thread count from params.yaml env: restore it for later test modules.
pytestmark = pytest.mark.usefixtures("restore_threads")


def record(experiment: str, group: str = "headline", variant: str = "sdcaff", units=((7, 0), (7, 1))) -> dict:
    """Returns a small metrics record in the evaluate stage's schema (the keys the figures read)."""
    per_fold = [{"seed": s, "fold": f, "wa": 50.0 + 3 * f + s % 2, "ua": 45.0 + 2 * f, "n": 8, "n_train": 30,
                 "selected_epoch": f} for s, f in units]
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


def write_log(directory: Path, epochs: int, test_logged: bool) -> None:
    """Writes a unit's log.csv with the train stage's columns; test columns empty unless logged."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": e, "loss": 2.0 - 0.3 * e, "train_wa": 40.0 + e, "train_ua": 38.0 + e, "valid_wa": 35.0 + e,
             "valid_ua": 33.0 + e, "test_wa": 36.0 + e if test_logged else None,
             "test_ua": 34.0 + e if test_logged else None, "test_ua_authors": 34.0 + e if test_logged else None,
             "lr": 1e-3, "seconds": 0.5} for e in range(epochs)]
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


def test_fused_vectors_are_the_test_rows_of_the_unit(study, monkeypatch):
    monkeypatch.chdir(study)
    checkpoint = study / "artifacts/runs/honest/seed_7/fold_0/checkpoint.pt"
    torch.set_num_threads(2)
    vectors, frame = plots.fused_vectors("honest", checkpoint, 0, Path("artifacts/manifest"))
    assert torch.get_num_threads() == 2  # the one-thread forward gives the caller's setting back
    torch.set_num_threads(1)
    again, _ = plots.fused_vectors("honest", checkpoint, 0, Path("artifacts/manifest"))
    assert again.tobytes() == vectors.tobytes()
    predictions = pd.read_csv(checkpoint.parent / "predictions.csv")
    assert len(frame) == len(predictions.drop_duplicates("utt_id")) == vectors.shape[0]
    assert vectors.shape[1] > 1 and np.isfinite(vectors).all()
    assert list(frame["emotion"].cat.categories) == fake_study.CLASSES
    assert sorted(frame["speaker"].unique()) == ["Ses01_F", "Ses02_F", "Ses03_F"]


def test_tsne_skips_with_a_warning_when_unit_or_manifest_is_missing(study, monkeypatch, caplog):
    monkeypatch.chdir(study)
    records = {"honest": json.loads((study / "results/metrics/honest.json").read_text())}
    p = plots.PlotsParams(tsne_experiment="honest", tsne_fold=1, dpi=60)
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert plots.draw_tsne(records, p, Path("artifacts/runs"), Path("artifacts/manifest"), study / "t.png") is None
    assert "fold_1/checkpoint.pt: no checkpoint" in caplog.text
    caplog.clear()
    p = plots.PlotsParams(tsne_experiment="honest", dpi=60)
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        assert plots.draw_tsne(records, p, Path("artifacts/runs"), study / "nowhere", study / "t.png") is None
    assert "no manifest for the speakers" in caplog.text
    assert not (study / "t.png").exists()


def test_records_only_draw_confusions_and_per_fold_and_warn_for_the_rest(tmp_path, caplog):
    records = {name: record(name) for name in ("iemocap-authors", "iemocap-loso")}
    records["iemocap-to-msp-improv"] = record("iemocap-to-msp-improv", group="cross-corpus")
    records["cnn-iemocap-authors"] = record("cnn-iemocap-authors", group="comparison", variant="cnn")
    records["ecapa-iemocap-authors"] = record("ecapa-iemocap-authors", group="baseline", variant="ecapa")
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        written = plots.draw(records, tmp_path / "out", plots.PlotsParams(dpi=50), runs_dir=tmp_path / "runs",
                             manifest_dir=tmp_path / "manifest")
    assert [w.name for w in written] == [
        "confusion_cnn-iemocap-authors.png", "confusion_iemocap-authors.png", "confusion_iemocap-loso.png",
        "confusion_iemocap-to-msp-improv.png", "per_fold.png"]
    for path in written:
        assert_png(path)
    assert "curves_iemocap-authors.png left out" in caplog.text
    assert "iemocap-loso/seed_7/fold_0/checkpoint.pt: no checkpoint: tsne.png left out" in caplog.text


def test_curves_use_the_logs_present_and_skip_without_any(tmp_path, caplog):
    rec = record("iemocap-authors", units=((7, 0), (7, 1), (8, 0)))
    write_log(tmp_path / "runs/iemocap-authors/seed_7/fold_0", 4, test_logged=True)
    write_log(tmp_path / "runs/iemocap-authors/seed_8/fold_0", 4, test_logged=True)
    with caplog.at_level(logging.WARNING, logger="sdcaff.plots"):
        path = plots.draw_curves("iemocap-authors", rec, tmp_path / "runs", tmp_path / "c.png", 50)
    assert path == tmp_path / "c.png"
    assert_png(path)
    assert "1 of 3 training logs missing" in caplog.text
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
