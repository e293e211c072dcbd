"""Stage splits: manifests -> one fold file per protocol (utt_id, fold, role, label, gender) + a JSON sidecar."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from sdcaff import params as params_module
from sdcaff.data.manifest import read as read_manifest_csv
from sdcaff.data.corpora import CORPORA
from sdcaff.errors import ManifestError, ParamsError
from sdcaff.files import atomic_paths, remove_stale_temporaries

log = logging.getLogger(__name__)

# The manifest columns this stage reads (docs/architecture.md); others may follow and are ignored.
MANIFEST_COLUMNS = ("utt_id", "corpus", "session", "speaker", "gender", "label", "mode", "target")
SPLIT_COLUMNS = ("utt_id", "fold", "role", "label", "gender")
ROLES = ("train", "valid", "test")
GENDERS = ("F", "M")
EMPTY_LABEL = "<empty>"  # how an empty label cell is counted in the sidecar's dropped counts


@dataclasses.dataclass(frozen=True)
class Source:
    corpus: Literal["iemocap", "msp-improv"]
    modes: list[str] | None  # manifest `mode` values kept; null = every mode
    label_column: Literal["label", "target"]  # `label` = consensus; `target` = MSP-IMPROV file-name letter
    label_map: str  # a key of splits.label_maps; labels absent from it are dropped and counted


@dataclasses.dataclass(frozen=True)
class Corpora:
    # Both keys in every protocol: dvc.yaml's splits@<protocol> deps interpolate them, and DVC
    # stops on a missing key, so test_source.corpus alone (cross only) cannot name the test manifest.
    train: Literal["iemocap", "msp-improv"]  # source.corpus
    test: Literal["iemocap", "msp-improv"]  # test_source.corpus, else source.corpus


@dataclasses.dataclass(frozen=True)
class Oversample:
    classes: list[str]  # classes whose rows appear twice; [] = no duplication
    where: Literal["both", "train"]  # both = every role (the authors); train = training rows only


@dataclasses.dataclass(frozen=True)
class Validation:
    rule: Literal["test", "share"]  # test = the test rows double as validation; share = held out of train
    share: float | None = None  # rule share: fraction of each (speaker, class) group of training rows


@dataclasses.dataclass(frozen=True)
class Protocol:
    description: str
    kind: Literal["random", "loso", "cross"]
    seed: int  # random folds and the validation share
    corpora: Corpora  # the manifests read: source's and test_source's corpus, spelt out for DVC
    source: Source  # the corpus folds are drawn from (cross: the training corpus)
    oversample: Oversample
    validation: Validation
    selection: Literal["test_max", "valid"]  # how training picks its reported epoch
    folds: int | None = None  # random kind only; loso has one fold per session, cross has fold 0
    test_source: Source | None = None  # cross kind only: the test corpus


@dataclasses.dataclass(frozen=True)
class SplitsParams:
    manifest_dir: str
    out_dir: str
    classes: list[str]  # class index order
    label_maps: dict[str, dict[str, str]]
    protocols: dict[str, Protocol]


@dataclasses.dataclass(frozen=True)
class Manifest:
    path: Path
    frame: pd.DataFrame  # MANIFEST_COLUMNS, session as int, sorted by utt_id, index 0..n-1


def load_params(path: str | Path | None = None) -> SplitsParams:
    """Returns params.yaml's `splits` section, checked for consistency between its entries."""
    path = Path(path) if path is not None else params_module.params_path()
    loaded = params_module.load("splits", SplitsParams, path)
    _, lines = params_module.read(path)

    def fail(keypath: tuple, message: str) -> None:
        """Raises ParamsError at the line of `keypath` (or its nearest parent with a line)."""
        while keypath and keypath not in lines:
            keypath = keypath[:-1]
        where = f"{path}:{lines[keypath]}" if keypath else str(path)
        raise ParamsError(f"{where}: {message}")

    classes = loaded.classes
    if not classes or len(set(classes)) != len(classes):
        fail(("splits", "classes"), f"'splits.classes' must list distinct class names, got {classes}")
    for map_name, label_map in loaded.label_maps.items():
        for raw, name in label_map.items():
            if name not in classes:
                fail(("splits", "label_maps", map_name, raw),
                     f"label map '{map_name}' sends {raw!r} to {name!r}, not one of {classes}")
    for name, protocol in loaded.protocols.items():
        key = ("splits", "protocols", name)
        said = f"protocol '{name}':"
        for side in ("source", "test_source"):
            source = getattr(protocol, side)
            if source is not None and source.label_map not in loaded.label_maps:
                fail(key + (side, "label_map"),
                     f"{said} unknown label map '{source.label_map}'; known: {', '.join(loaded.label_maps)}")
        if (protocol.kind == "random") != (protocol.folds is not None):
            fail(key + ("kind",), f"{said} 'folds' is set for kind random and only for it")
        if protocol.folds is not None and protocol.folds < 2:
            fail(key + ("folds",), f"{said} 'folds' must be at least 2, got {protocol.folds}")
        if (protocol.kind == "cross") != (protocol.test_source is not None):
            fail(key + ("kind",), f"{said} 'test_source' is set for kind cross and only for it")
        if protocol.test_source is not None and protocol.test_source.corpus == protocol.source.corpus:
            fail(key + ("test_source", "corpus"), f"{said} a cross protocol tests on another corpus")
        read = Corpora(protocol.source.corpus, (protocol.test_source or protocol.source).corpus)
        if protocol.corpora != read:
            fail(key + ("corpora",), f"{said} 'corpora' is {dataclasses.asdict(protocol.corpora)} but source and "
                 f"test_source read {dataclasses.asdict(read)}; DVC would track the wrong manifests")
        rule = protocol.validation
        if (rule.rule == "share") != (rule.share is not None):
            fail(key + ("validation",), f"{said} 'validation.share' is set for rule share and only for it")
        if rule.share is not None and not 0.0 < rule.share < 1.0:
            fail(key + ("validation", "share"), f"{said} 'validation.share' must lie in (0, 1), got {rule.share}")
        # A protocol that selects on its test rows must say so by its selection rule, so reports can flag it.
        if (rule.rule == "test") != (protocol.selection == "test_max"):
            fail(key + ("selection",), f"{said} selection test_max goes with validation rule test, valid with share")
        unknown = [c for c in protocol.oversample.classes if c not in classes]
        if unknown:
            fail(key + ("oversample", "classes"), f"{said} oversample classes {unknown} are not in {classes}")
    return loaded


def read_manifest(path: str | Path, corpus: str) -> Manifest:
    """Returns the manifest at `path`, checked and sorted by utt_id (one row per utterance)."""
    path = Path(path)
    frame = read_manifest_csv(path, corpus, MANIFEST_COLUMNS)
    if frame.empty:
        raise ManifestError(f"{path}: no utterance rows")

    def first_bad(mask: pd.Series, what: str) -> None:
        """Raises ManifestError at the first row where `mask` holds, naming file and line."""
        if mask.any():
            row = int(np.flatnonzero(mask.to_numpy())[0])
            # +2: line 1 is the header and rows count from 0.
            raise ManifestError(f"{path}:{row + 2}: {what}: {frame.iloc[row][list(MANIFEST_COLUMNS)].to_dict()}")

    first_bad(frame["utt_id"] == "", "empty utt_id")
    repeated = frame["utt_id"].duplicated(keep="first")
    if repeated.any():
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        utt_id = frame["utt_id"].iat[row]
        first = int(np.flatnonzero((frame["utt_id"] == utt_id).to_numpy())[0])
        raise ManifestError(f"{path}:{row + 2}: duplicated utt_id {utt_id!r} (first at line {first + 2})")
    first_bad(frame["corpus"] != corpus, f"corpus is not '{corpus}'")
    first_bad(~frame["session"].str.fullmatch(r"[0-9]+"), "session is not a whole number")
    first_bad(frame["speaker"] == "", "empty speaker")
    first_bad(~frame["gender"].isin(GENDERS), f"gender is not one of {'/'.join(GENDERS)}")
    frame = frame[list(MANIFEST_COLUMNS)].astype({"session": int})
    return Manifest(path, frame.sort_values("utt_id", kind="mergesort", ignore_index=True))


def random_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Returns the fold (0..folds-1) of each of n utterances, drawn as the authors' code draws them: (n,) int64."""
    # authors' code: np.random.seed(987654) then np.random.choice; a RandomState gives the same legacy stream.
    rng = np.random.RandomState(seed)
    # authors' code: int(n * 0.2) per drawn fold; equal to n // 5 for every n, as 0.2 rounds up in binary.
    size = n // folds
    fold_of = np.full(n, folds - 1, dtype=np.int64)  # authors' code: what is left after the draws is the last fold
    remaining = list(range(n))
    for fold in range(folds - 1):
        drawn = rng.choice(remaining, size, replace=False)
        fold_of[drawn] = fold
        # authors' code: the remainder is a Python set turned back into a list. CPython iterates a set of
        # ints in hash-table order, not always ascending, and the next draw indexes into that order.
        remaining = list(set(remaining) - set(drawn.tolist()))
    return fold_of


def select(frame: pd.DataFrame, source: Source, label_map: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """Returns the rows `source` keeps (class name in column `class`) and the dropped counts by mode and label."""
    in_mode = frame["mode"].isin(source.modes) if source.modes is not None else pd.Series(True, index=frame.index)
    raw = frame[source.label_column]
    mapped = raw.map(label_map)
    keep = in_mode & mapped.notna()
    dropped = {
        "mode": _counts(frame.loc[~in_mode, "mode"]),
        "label": _counts(raw[in_mode & mapped.isna()].replace("", EMPTY_LABEL)),
    }
    kept = frame[keep].assign(**{"class": mapped[keep]})
    return kept.reset_index(drop=True), dropped


def _counts(values: pd.Series) -> dict[str, int]:
    """Returns how often each value occurs, sorted by value."""
    return {str(k): int(v) for k, v in sorted(collections.Counter(values).items())}


def hold_out(pool: pd.DataFrame, share: float, seed: int, fold: int) -> np.ndarray:
    """Returns the validation mask over `pool`: `share` of each (speaker, class) group, (len(pool),) bool."""
    rng = np.random.default_rng([seed, fold])
    groups = pool.reset_index(drop=True).groupby(["speaker", "class"], sort=True).indices
    keys = sorted(groups)
    quota = share * np.array([len(groups[k]) for k in keys], dtype=np.float64)
    count = np.floor(quota).astype(np.int64)
    # Largest remainders get the rest, so small groups (a small corpus) still give round(share * pool)
    # rows in all; a seeded shuffle breaks ties so that no speaker or class is favoured by its name.
    left = int(np.floor(quota.sum() + 0.5)) - int(count.sum())
    shuffled = rng.permutation(len(keys))
    ranked = shuffled[np.argsort(count[shuffled] - quota[shuffled], kind="stable")]
    count[ranked[:left]] += 1
    mask = np.zeros(len(pool), dtype=bool)
    for key, n in zip(keys, count):
        mask[rng.permutation(groups[key])[:n]] = True
    return mask


def duplicate(rows: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Returns `rows` with every row of `classes` appearing twice."""
    return pd.concat([rows, rows[rows["class"].isin(classes)]], ignore_index=True)


def fold_rows(fold: int, pool: pd.DataFrame, test: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Returns one fold's split rows (SPLIT_COLUMNS) from its training pool and its test rows."""
    rule, oversample = protocol.validation, protocol.oversample
    both = oversample.classes if oversample.where == "both" else []
    test = duplicate(test, both)
    if rule.rule == "test":
        train, valid = pool, test
    else:
        held = hold_out(pool, rule.share, protocol.seed, fold)
        train, valid = pool[~held], duplicate(pool[held], both)
    train = duplicate(train, oversample.classes)
    parts = [part.assign(role=role) for role, part in (("train", train), ("valid", valid), ("test", test))]
    rows = pd.concat(parts, ignore_index=True).assign(fold=fold, label=lambda f: f["class"])
    return rows[list(SPLIT_COLUMNS)]


def build(
    name: str, protocol: Protocol, params: SplitsParams, manifests: dict[str, Manifest]
) -> tuple[pd.DataFrame, dict]:
    """Returns a protocol's split rows (SPLIT_COLUMNS, sorted by fold, role, utt_id) and its JSON sidecar."""
    source = protocol.source
    manifest = manifests[source.corpus]
    frame = manifest.frame
    if protocol.kind == "random":
        # authors' code: folds are drawn over every wav before any filtering, so they are cut from all rows.
        frame = frame.assign(draw=random_folds(len(frame), protocol.folds, protocol.seed))
    kept, dropped_here = select(frame, source, params.label_maps[source.label_map])
    dropped = {source.corpus: dropped_here}
    sources = [source]
    infos, folds = [], []
    if protocol.kind == "cross":
        other = protocol.test_source
        test, dropped[other.corpus] = select(manifests[other.corpus].frame, other, params.label_maps[other.label_map])
        sources.append(other)
        infos.append({"fold": 0})
        folds.append(fold_rows(0, kept, test, protocol))
    else:
        if protocol.kind == "loso":
            _check_one_session_per_speaker(manifest)
        for info, in_test in cut_test_folds(protocol, kept):
            infos.append(info)
            folds.append(fold_rows(info["fold"], kept[~in_test], kept[in_test], protocol))
    rows = pd.concat(folds, ignore_index=True)
    rows = rows.sort_values(["fold", "role", "utt_id"], kind="mergesort", ignore_index=True)
    for info in infos:
        in_fold = rows[rows["fold"] == info["fold"]]
        info["counts"] = {
            role: {c: int(((in_fold["role"] == role) & (in_fold["label"] == c)).sum()) for c in params.classes}
            for role in ROLES
        }
        # A fold with no rows in a role cannot train, select or score: stop here, not at train.
        empty = [role for role in ROLES if not sum(info["counts"][role].values())]
        if empty:
            paths = ", ".join(str(manifests[s.corpus].path) for s in sources)
            raise ManifestError(
                f"{paths}: protocol '{name}' fold {info['fold']} has no {' and no '.join(repr(r) for r in empty)} "
                f"rows ({len(kept)} utterances kept after the label map"
                + (f", sessions {sorted(kept['session'].unique().tolist())}" if "session" in kept else "")
                + "); a corpus this small cannot be split this way")
    sidecar = {
        "protocol": name,
        "description": protocol.description,
        "kind": protocol.kind,
        "corpora": {"train": source.corpus, "test": sources[-1].corpus},
        "manifests": {s.corpus: str(manifests[s.corpus].path) for s in sources},
        "classes": list(params.classes),  # index order: position i is class index i
        "label_column": {s.corpus: s.label_column for s in sources},
        "label_map": {s.corpus: {"name": s.label_map, "map": params.label_maps[s.label_map]} for s in sources},
        "modes": {s.corpus: s.modes for s in sources},
        "dropped": dropped,
        "folds": len(infos),
        "seed": protocol.seed,
        "oversample": dataclasses.asdict(protocol.oversample),
        "validation": dataclasses.asdict(protocol.validation),
        "selection": protocol.selection,
        "per_fold": infos,
    }
    return rows, sidecar


def cut_test_folds(protocol: Protocol, kept: pd.DataFrame) -> list[tuple[dict, np.ndarray]]:
    """Returns, per fold of a random or loso protocol, its description and its test mask over `kept`, (len(kept),)."""
    if protocol.kind == "random":
        return [({"fold": fold}, (kept["draw"] == fold).to_numpy()) for fold in range(protocol.folds)]
    cuts = []
    for fold, session in enumerate(sorted(kept["session"].unique().tolist())):
        in_test = (kept["session"] == session).to_numpy()
        speakers = sorted(kept.loc[in_test, "speaker"].unique().tolist())
        cuts.append(({"fold": fold, "test_session": int(session), "test_speakers": speakers}, in_test))
    return cuts


def _check_one_session_per_speaker(manifest: Manifest) -> None:
    """Raises ManifestError if a speaker spans sessions: holding out a session would then not hold out the speaker."""
    sessions = manifest.frame.groupby("speaker")["session"].unique()
    shared = sessions[sessions.map(len) > 1]
    if len(shared):
        speaker = shared.index[0]
        raise ManifestError(
            f"{manifest.path}: speaker {speaker!r} appears in sessions {sorted(shared.iloc[0].tolist())}; "
            "leave-one-session-out would put that speaker in train and test"
        )


def output_paths(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Returns the paths of protocol `name`'s split CSV and JSON sidecar under `out_dir`."""
    return Path(out_dir) / f"{name}.csv", Path(out_dir) / f"{name}.json"


def write_all(out_dir: str | Path, built: dict[str, tuple[pd.DataFrame, dict]]) -> dict[str, tuple[Path, Path]]:
    """Returns each protocol's (csv, json) paths, all renamed into place only once every file is written."""
    paths = {name: output_paths(out_dir, name) for name in built}
    # One stage's outputs: a failure while writing any of them leaves the previous set, never a mixed one.
    with atomic_paths(*(path for pair in paths.values() for path in pair)) as temps:
        for (rows, sidecar), csv_tmp, json_tmp in zip(built.values(), temps[0::2], temps[1::2]):
            rows.to_csv(csv_tmp, index=False, lineterminator="\n")
            json_tmp.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return paths


def write(out_dir: str | Path, name: str, rows: pd.DataFrame, sidecar: dict) -> tuple[Path, Path]:
    """Returns the paths of <out_dir>/<name>.csv and .json, renamed into place only once both are written."""
    return write_all(out_dir, {name: (rows, sidecar)})[name]


def summary(sidecar: dict) -> list[str]:
    """Returns one human-readable line per fold: rows per role with their class counts."""
    lines = []
    for info in sidecar["per_fold"]:
        roles = []
        for role in ROLES:
            counts = info["counts"][role]
            roles.append(f"{role} {sum(counts.values())} (" + ", ".join(f"{c} {n}" for c, n in counts.items()) + ")")
        lines.append(f"{sidecar['protocol']} fold {info['fold']}: " + " | ".join(roles))
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--protocol NAME` (repeatable) to the verb's parser."""
    parser.add_argument(
        "--protocol", action="append", dest="protocols", metavar="NAME",
        help="write only this protocol (repeatable); default: every entry of params splits.protocols",
    )


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing every configured (or named) protocol's split CSV and JSON sidecar."""
    params = load_params()
    names = args.protocols or list(params.protocols)
    unknown = [n for n in names if n not in params.protocols]
    if unknown:
        raise ParamsError(
            f"{params_module.params_path()}: unknown protocol(s) {', '.join(unknown)}; "
            f"splits.protocols has {', '.join(params.protocols)}"
        )
    protocols = {n: params.protocols[n] for n in names}
    stale = remove_stale_temporaries(*(path for n in names for path in output_paths(params.out_dir, n)))
    if stale:
        log.info("removed %d temporary file(s) a killed run left: %s", len(stale), ", ".join(map(str, stale)))
    sides = [s for p in protocols.values() for s in (p.source, p.test_source) if s is not None]
    needed = sorted({s.corpus for s in sides}, key=CORPORA.index)
    manifests = {c: read_manifest(Path(params.manifest_dir) / f"{c}.csv", c) for c in needed}
    log.info("read %s", ", ".join(f"{m.path} ({len(m.frame)} utterances)" for m in manifests.values()))
    # Every protocol is built before any file is written: one that fails leaves no new file beside old ones.
    built = {}
    for name, protocol in protocols.items():
        rows, sidecar = build(name, protocol, params, manifests)
        for corpus, dropped in sidecar["dropped"].items():
            log.info("%s: %s dropped by mode %s, by label %s",
                     name, corpus, dropped["mode"] or "none", dropped["label"] or "none")
        for line in summary(sidecar):
            log.info("%s", line)
        built[name] = (rows, sidecar)
    for name, (csv_path, json_path) in write_all(params.out_dir, built).items():
        rows, sidecar = built[name]
        log.info("wrote %s (%d rows, %d folds) and %s", csv_path, len(rows), sidecar["folds"], json_path)
    return 0
