"""Tiny stand-ins for the stages before training: feature files, split files and a params.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
import yaml

CLASSES = ["neutral", "sad", "angry", "happy"]
N_MFCC, FRAMES = 12, 40  # small maps: the tiny CNN's three pools still leave a 1 x 5 map

# A model of a few thousand parameters with the real architecture (both branches, Cross AFF, DyReLU).
TINY_MODEL = {
    "n_mfcc": N_MFCC, "frames": FRAMES, "cnn_channels": [4, 4, 4, 4, 8], "lstm_hidden": 8,
    "lstm_pooled": 4, "aff_inner": 4,
}
TINY_TRAIN = {
    "epochs": 3, "batch_size": 8, "lr": 5.0e-3, "weight_decay": 1.0e-6, "lr_drop_epochs": [1, 2],
    "lr_drop_factor": 0.1, "seeds": [7],
    "loss": {"emotion_weight": 0.7, "gender_weight": 0.3, "center_weight": 0.15, "center_lr": 0.1},
}


def utt_ids(corpus: str, n: int) -> list[str]:
    return [f"{corpus}/utt{i:04d}" for i in range(n)]


def write_features(path: Path, ids: list[str], seed: int = 0) -> dict:
    """Writes a feature file in the contract's format; class k's utterances are shifted by k (learnable)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(ids)
    shift = torch.tensor([i % len(CLASSES) for i in range(n)], dtype=torch.float32)[:, None, None]
    data = {
        "utt_ids": list(ids),
        "mfcc": torch.randn(n, N_MFCC, FRAMES, generator=gen) + shift,
        "delta": torch.randn(n, N_MFCC, FRAMES, generator=gen),
        "delta_delta": torch.randn(n, N_MFCC, FRAMES, generator=gen),
        "speech_samples": torch.full((n,), 1000, dtype=torch.int64),
        "params": {"n_mfcc": N_MFCC},
        "env": {"torch": str(torch.__version__)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def label_of(utt_id: str) -> str:
    """Returns the class write_features gave this utterance (its index modulo the class count)."""
    return CLASSES[int(utt_id[-4:]) % len(CLASSES)]


def split_rows(train_ids: list[str], test_ids: list[str], folds: int, valid_is_test: bool) -> pd.DataFrame:
    """Returns split rows: folds cut in blocks of one utterance per class; valid = test or a slice of train."""
    rows = []
    for fold in range(folds):
        test = [u for i, u in enumerate(test_ids) if (i // len(CLASSES)) % folds == fold]
        pool = [u for u in train_ids if u not in test]
        valid = test if valid_is_test else pool[::5]
        train = [u for u in pool if u not in valid or valid_is_test]
        for role, ids in (("train", train), ("valid", valid), ("test", test)):
            for u in ids:
                rows.append({"utt_id": u, "fold": fold, "role": role, "label": label_of(u),
                             "gender": "F" if int(u[-4:]) % 3 else "M"})
    return pd.DataFrame(rows).sort_values(["fold", "role", "utt_id"], kind="mergesort", ignore_index=True)


def write_split(directory: Path, name: str, rows: pd.DataFrame, selection: str,
                corpora: tuple[str, str] = ("iemocap", "iemocap")) -> Path:
    """Writes <name>.csv and the sidecar keys training reads; returns the CSV path."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / f"{name}.csv"
    rows.to_csv(csv_path, index=False, lineterminator="\n")
    sidecar = {"protocol": name, "corpora": {"train": corpora[0], "test": corpora[1]}, "classes": CLASSES,
               "folds": int(rows["fold"].max()) + 1, "selection": selection}
    (directory / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return csv_path


def write_study(root: Path, n: int = 48, folds: int = 2) -> None:
    """Writes features, an authors-like (test_max) and an honest (valid) split, and params.yaml under root."""
    ids = utt_ids("iemocap", n)
    write_features(root / "artifacts/features/iemocap.pt", ids)
    other = utt_ids("msp-improv", n // 2)
    write_features(root / "artifacts/features/msp-improv.pt", other, seed=1)
    splits = root / "artifacts/splits"
    write_split(splits, "random", split_rows(ids, ids, folds, valid_is_test=True), "test_max")
    write_split(splits, "honest", split_rows(ids, ids, folds, valid_is_test=False), "valid")
    write_split(splits, "cross", split_rows(ids, other, 1, valid_is_test=False), "valid", ("iemocap", "msp-improv"))
    write_params(root / "params.yaml")


def write_params(path: Path, train: dict | None = None, experiments: dict | None = None) -> None:
    same = {"train": "iemocap", "test": "iemocap"}
    params = {
        # One thread: each tiny op pays an OpenMP barrier, which on a busy 2-core machine costs more than the op.
        "env": {"threads": 1, "deterministic": True, "device": "cpu"},
        "profile": "tiny",
        "profiles": {"tiny": {"model": TINY_MODEL, "train": train or TINY_TRAIN}},
        "experiments": experiments or {
            "authors": {"protocol": "random", "features": same},
            "honest": {"protocol": "honest", "features": same},
            "cross": {"protocol": "cross", "features": {"train": "iemocap", "test": "msp-improv"}},
        },
        "evaluate": {"metrics_dir": "results/metrics", "predictions_dir": "results/predictions"},
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))
