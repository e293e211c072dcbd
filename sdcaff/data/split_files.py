"""A protocol's split files: artifacts/splits/<protocol>.csv (one row per utterance and fold) and its JSON sidecar.

Written by `sdcaff splits`; read by training (through sdcaff.data.loader) and by `sdcaff evaluate`, which
must not import torch, so the reading lives here, apart from the tensors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from sdcaff.errors import ManifestError

# authors' code: sex_dict F -> 0, M -> 1 (data_processing_IEMOCAP.get_num_label).
GENDERS = ("F", "M")
SPLIT_COLUMNS = ("utt_id", "fold", "role", "label", "gender")
ROLES = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    csv_path: Path
    rows: pd.DataFrame  # SPLIT_COLUMNS + `line`, the row's 1-based line in the CSV
    sidecar: dict  # the protocol's JSON sidecar (classes, folds, selection, corpora, ...)

    @property
    def classes(self) -> list[str]:
        """Returns the class names in index order (the sidecar's `classes`)."""
        return list(self.sidecar["classes"])

    def select(self, fold: int, role: str) -> pd.DataFrame:
        """Returns the rows of one fold and role, in file order (duplicated utterances kept)."""
        rows = self.rows
        return rows[(rows["fold"] == fold) & (rows["role"] == role)]


def read_split(csv_path: str | Path) -> Split:
    """Returns a protocol's split rows and sidecar; a bad column or value raises naming file:line."""
    csv_path = Path(csv_path)
    json_path = csv_path.with_suffix(".json")
    try:
        rows = pd.read_csv(csv_path, dtype={"utt_id": str, "role": str, "label": str, "gender": str},
                           keep_default_na=False)
        sidecar = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{exc.filename}: split file missing; run `sdcaff splits`") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{json_path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{csv_path}: not a readable CSV: {exc}") from exc
    missing = [c for c in SPLIT_COLUMNS if c not in rows.columns]
    if missing:
        raise ManifestError(f"{csv_path}:1: missing column(s) {', '.join(missing)}; "
                            f"expected {', '.join(SPLIT_COLUMNS)}")
    for key in ("classes", "folds", "selection", "corpora"):
        if key not in sidecar:
            raise ManifestError(f"{json_path}: missing key '{key}'")
    rows = rows[list(SPLIT_COLUMNS)].assign(line=range(2, len(rows) + 2))
    fold = pd.to_numeric(rows["fold"], errors="coerce")
    _first_bad(csv_path, rows, fold.isna() | (fold % 1 != 0), "fold", "an integer")
    rows["fold"] = fold.astype(int)
    _first_bad(csv_path, rows, ~rows["role"].isin(ROLES), "role", f"one of {', '.join(ROLES)}")
    _first_bad(csv_path, rows, ~rows["label"].isin(sidecar["classes"]), "label",
               f"a class of {json_path.name} ({', '.join(sidecar['classes'])})")
    _first_bad(csv_path, rows, ~rows["gender"].isin(GENDERS), "gender", "F or M")
    _first_bad(csv_path, rows, rows["utt_id"] == "", "utt_id", "non-empty")
    return Split(csv_path, rows.reset_index(drop=True), sidecar)


def _first_bad(path: Path, rows: pd.DataFrame, bad: pd.Series, column: str, expected: str) -> None:
    """Raises ManifestError naming the first row where `bad` holds."""
    if bad.any():
        row = rows[bad].iloc[0]
        raise ManifestError(f"{path}:{row['line']}: {column} must be {expected}, got {row[column]!r}")
