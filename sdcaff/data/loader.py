"""Training data: feature files merged by utt_id + one fold and role of a split file -> model-ready items."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from sdcaff.data.split_files import GENDERS, ROLES, SPLIT_COLUMNS, Split, read_split  # noqa: F401 (re-exported)
from sdcaff.errors import ManifestError

log = logging.getLogger(__name__)

FEATURE_KEYS = ("utt_ids", "mfcc", "delta", "delta_delta")


@dataclasses.dataclass(frozen=True)
class Features:
    paths: tuple[Path, ...]
    utt_ids: list[str]  # (N,)
    index: dict[str, int]  # utt_id -> row of the tensors
    mfcc: torch.Tensor  # (N, n_mfcc, T) float32
    delta: torch.Tensor  # (N, n_mfcc, T)
    delta_delta: torch.Tensor  # (N, n_mfcc, T)


def load_features(paths: Sequence[str | Path]) -> Features:
    """Returns the feature files merged by utt_id: tensors (N, n_mfcc, T); a clash or bad file raises."""
    paths = tuple(dict.fromkeys(Path(p) for p in paths))  # one set named twice is read once
    utt_ids: list[str] = []
    owner: dict[str, Path] = {}
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURE_KEYS[1:]}
    for path in paths:
        data = _read_feature_file(path)
        for utt in data["utt_ids"]:
            if utt in owner:
                raise ManifestError(f"{path}: utt_id {utt!r} is also in {owner[utt]}; feature files must not overlap")
            owner[utt] = path
        utt_ids.extend(data["utt_ids"])
        for key in parts:
            parts[key].append(data[key])
    for key, tensors in parts.items():
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) > 1:
            raise ManifestError(f"{', '.join(map(str, paths))}: '{key}' shapes differ between files: {sorted(shapes)}")
    merged = {k: ts[0] if len(ts) == 1 else torch.cat(ts) for k, ts in parts.items()}
    log.info("read %d utterances x %s features from %s", len(utt_ids), tuple(merged["mfcc"].shape[1:]),
             ", ".join(map(str, paths)))
    return Features(paths, utt_ids, {u: i for i, u in enumerate(utt_ids)}, **merged)


def _read_feature_file(path: Path) -> dict:
    """Returns one feature file's dict after checking its keys, dtypes and shapes."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: feature file missing; run `sdcaff features`") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ManifestError(f"{path}: not a readable feature file: {exc}") from exc
    if isinstance(data, dict) and "not_run" in data:
        # The features stage writes an empty file when it could not run (kind ssl without a checkpoint).
        raise ManifestError(f"{path}: the features stage did not run for this set: {data['not_run']}")
    if not isinstance(data, dict) or any(k not in data for k in FEATURE_KEYS):
        raise ManifestError(f"{path}: a feature file is a dict with keys {', '.join(FEATURE_KEYS)}")
    n = len(data["utt_ids"])
    for key in FEATURE_KEYS[1:]:
        t = data[key]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.dim() != 3 or t.shape[0] != n:
            what = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ManifestError(f"{path}: '{key}' must be a float32 tensor ({n}, n_mfcc, T), got {what}")
    if len(set(data["utt_ids"])) != n:
        raise ManifestError(f"{path}: duplicated utt_ids")
    return data


class UtteranceDataset(Dataset):
    """Split rows joined to their features: item i -> (static, dynamic, emotion, gender, utt_id)."""

    def __init__(self, features: Features, rows: pd.DataFrame, classes: Sequence[str], split_path: Path):
        missing = ~rows["utt_id"].isin(features.index.keys())
        if missing.any():
            row = rows[missing].iloc[0]
            raise ManifestError(
                f"{split_path}:{row['line']}: utt_id {row['utt_id']!r} is not in the feature file(s) "
                f"{', '.join(map(str, features.paths))} ({int(missing.sum())} rows of this fold/role missing)"
            )
        class_index = {c: i for i, c in enumerate(classes)}
        self.features = features
        self.utt_ids = rows["utt_id"].tolist()
        self.rows = torch.tensor([features.index[u] for u in self.utt_ids], dtype=torch.long)
        self.emotion = torch.tensor([class_index[c] for c in rows["label"]], dtype=torch.long)
        self.gender = torch.tensor([GENDERS.index(g) for g in rows["gender"]], dtype=torch.long)

    def __len__(self) -> int:
        """Returns the number of split rows (a duplicated utterance counts twice)."""
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
        """Returns static (1, n_mfcc, T), dynamic (T, 3 * n_mfcc), emotion (), gender (), utt_id."""
        r = self.rows[i]
        f = self.features
        mfcc = f.mfcc[r]
        # docs/architecture.md: the dynamic input is MFCC, delta, delta-delta stacked per frame.
        dynamic = torch.cat([mfcc, f.delta[r], f.delta_delta[r]], dim=0).transpose(0, 1)
        return mfcc.unsqueeze(0), dynamic, self.emotion[i], self.gender[i], self.utt_ids[i]


def make_loader(
    dataset: UtteranceDataset, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """Returns a DataLoader over `dataset`; shuffling draws only from `generator`, so a seed fixes the order."""
    if shuffle and generator is None:
        raise ValueError("a shuffled loader needs a seeded generator")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers)
