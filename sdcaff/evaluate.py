"""Stage evaluate: one experiment's finished units -> results/metrics/<exp>.json (percent) + predictions CSV."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdcaff import env, metrics, params, results
from sdcaff.data import fingerprint
from sdcaff.data.split_files import Split, read_split
from sdcaff.errors import ManifestError, SdcaffError
from sdcaff.files import atomic_path
from sdcaff.units import RUNS_DIR, SELECTED_BY, Resolved, plan, read_resolved, split_path, unit_dir, unit_key

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("utt_id", "fold", "seed", "true", "predicted")  # then p_<class> per class
DECIMALS = 4  # percent to 1e-4 points: far below any difference the study reads, and diffs stay short


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    metrics_dir: str = "results/metrics"  # <exp>.json, small, tracked in git (DVC metrics, cache: false)
    predictions_dir: str = "results/predictions"  # <exp>.csv, every unit's test predictions (DVC-cached)
    headline_dir: str = "results/headline"  # <exp>.json, the few numbers `dvc metrics show` / `dvc exp show` list
    corpora_dir: str = "results/corpora"  # the fingerprints (stage fingerprint) of the corpora a record names
    manifest_dir: str = "artifacts/manifest"  # each corpus's manifest: its utterances, against the release's
    features_dir: str = "results/features"  # each feature set's summary: the upstream checkpoint of kind ssl


@dataclasses.dataclass(frozen=True)
class Unit:
    seed: int
    fold: int
    result: dict  # the unit's result.json
    predictions: pd.DataFrame  # PREDICTION_COLUMNS + p_<class>, one row per test row


def read_unit(directory: Path, key: dict, experiment: str, classes: list[str]) -> tuple[dict, pd.DataFrame]:
    """Returns a finished unit's result record and test predictions; an unfinished or stale unit raises."""
    done = directory / "done"
    if not done.is_file():
        raise SdcaffError(f"{directory}: unit not finished; run `sdcaff train --experiment {experiment}`")
    result_path, predictions_path = directory / "result.json", directory / "predictions.csv"
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{result_path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    if not isinstance(result, dict) or result.get("key_hash") != env.params_hash(key):
        raise SdcaffError(f"{directory}: unit was trained on other {stale_parts(result, key)} than the current "
                          f"ones; run `sdcaff train --experiment {experiment}` (or `dvc repro`) to retrain it")
    predictions = pd.read_csv(predictions_path, dtype={"utt_id": str, "true": str, "predicted": str},
                              keep_default_na=False)
    expected_columns = list(PREDICTION_COLUMNS) + [f"p_{c}" for c in classes]
    if list(predictions.columns) != expected_columns:
        raise ManifestError(f"{predictions_path}:1: columns {list(predictions.columns)}, expected {expected_columns}")
    for column in ("true", "predicted"):
        bad = ~predictions[column].isin(classes)
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise ManifestError(f"{predictions_path}:{line}: {column} {predictions.loc[bad, column].iloc[0]!r} "
                                f"is not one of {classes}")
    return result, predictions


def stale_parts(result: dict, key: dict) -> str:
    """Returns which parts of a unit's key differ from `key`, in words (changed input files by name)."""
    stored = result.get("key") if isinstance(result, dict) else None
    if not isinstance(stored, dict):
        return "inputs (its result.json records no key: written by an older sdcaff)"
    parts = []
    changed = sorted(p for p in set(stored.get("inputs", {})) | set(key["inputs"])
                     if stored.get("inputs", {}).get(p) != key["inputs"].get(p))
    if changed:
        parts.append("inputs (" + ", ".join(changed) + ")")
    for name, words in (("config", "settings"), ("code", "training code"), ("versions", "library versions")):
        if stored.get(name) != key[name]:
            parts.append(words)
    return " and ".join(parts) or "settings"


def read_speakers(manifest: Path) -> pd.DataFrame | None:
    """Returns utt_id -> speaker, session from a corpus's manifest, or None when there is none to read."""
    if not manifest.is_file():
        return None
    frame = pd.read_csv(manifest, usecols=lambda c: c in ("utt_id", "speaker", "session"), dtype=str,
                        keep_default_na=False)
    for column in ("utt_id", "speaker"):
        if column not in frame:
            raise ManifestError(f"{manifest}: no '{column}' column")
    if "session" not in frame:
        frame["session"] = ""
    return frame.set_index("utt_id")


def per_group(true: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """Returns {group: {wa, ua, n}} over the pooled test rows of each group (speaker or session), sorted."""
    out = {}
    for name in sorted(set(groups.tolist())):
        mask = groups == name
        out[str(name)] = {"wa": metrics.weighted_accuracy(true[mask], pred[mask]),
                          "ua": metrics.unweighted_accuracy(true[mask], pred[mask]), "n": int(mask.sum())}
    return out


def summarise(config: Resolved, split: Split, units: list[Unit],
              corpora: dict[str, dict] | None = None, speakers: pd.DataFrame | None = None) -> dict[str, Any]:
    """Returns the experiment's metrics record (percent): pooled and per-unit WA/UA, confusion, authors' maxima."""
    classes = split.classes
    index = {c: i for i, c in enumerate(classes)}
    per_fold, trues, preds = [], [], []
    for unit in units:
        true = unit.predictions["true"].map(index).to_numpy()
        pred = unit.predictions["predicted"].map(index).to_numpy()
        per_fold.append({"seed": unit.seed, "fold": unit.fold, "wa": metrics.weighted_accuracy(true, pred),
                         "ua": metrics.unweighted_accuracy(true, pred), "n": len(true),
                         # Training rows (duplicates counted): the test/train ratio of the corrected t-test.
                         "n_train": len(split.select(unit.fold, "train")),
                         "selected_epoch": unit.result["selected_epoch"],
                         # Which run of the unit this is: figures use a unit's files only under this hash.
                         "unit_hash": unit.result["unit_hash"]})
        trues.append(true)
        preds.append(pred)
    true, pred = np.concatenate(trues), np.concatenate(preds)
    seeds = list(dict.fromkeys(u.seed for u in units))
    rule = split.sidecar["selection"]
    record: dict[str, Any] = {
        "experiment": config.experiment,
        "model": config.spec["model"],
        "variant": config.spec["variant"],
        "group": config.spec["group"],
        "protocol": config.spec["protocol"],
        "train_corpus": split.sidecar["corpora"]["train"],
        "test_corpus": split.sidecar["corpora"]["test"],
        # Each corpus's fingerprint and status (synthetic, real and complete, real subset): the report puts
        # side by side only records made from the same corpora.
        "corpora": corpora or {},
        "labels": classes,
        "seeds": seeds,
        "folds": sorted({u.fold for u in units}),
        "n": len(true),
        # Pooled = every test prediction of every unit at once (each seed counts once per utterance);
        # fold_mean/fold_std = over the (seed, fold) units.
        "wa": {"pooled": metrics.weighted_accuracy(true, pred), **metrics.spread([f["wa"] for f in per_fold])},
        "ua": {"pooled": metrics.unweighted_accuracy(true, pred), **metrics.spread([f["ua"] for f in per_fold])},
        "per_fold": per_fold,
        "per_seed": [
            {"seed": s, "wa": float(np.mean([f["wa"] for f in per_fold if f["seed"] == s])),
             "ua": float(np.mean([f["ua"] for f in per_fold if f["seed"] == s]))}
            for s in seeds
        ],
        "confusion": metrics.confusion(true, pred, len(classes)).tolist(),
        "per_class": per_class(classes, true, pred, trues, preds),
        # Pooled over every unit's test rows of the speaker (session); empty without a manifest to name them.
        "per_speaker": {}, "per_session": {},
        "selection": rule,
        "selected_by": SELECTED_BY[rule],
    }
    if speakers is not None:
        ids = pd.concat([u.predictions["utt_id"] for u in units], ignore_index=True)
        known = speakers.reindex(ids)
        if known["speaker"].isna().any():
            missing = ids[known["speaker"].isna().to_numpy()].iloc[0]
            raise SdcaffError(f"prediction for '{missing}' has no row in the manifest of {record['test_corpus']}")
        record["per_speaker"] = per_group(true, pred, known["speaker"].to_numpy())
        if (known["session"] != "").all():
            record["per_session"] = per_group(true, pred, known["session"].to_numpy())
    if rule == "test_max":
        authors_wa = [u.result["authors"]["wa"] for u in units]
        authors_ua = [u.result["authors"]["ua"] for u in units]
        # The paper's procedure: per unit the best test WA and the best rounded-recall UA over epochs,
        # each on its own, then averaged over folds.
        record["authors"] = {
            "wa": float(np.mean(authors_wa)), "ua": float(np.mean(authors_ua)),
            "wa_std": metrics.spread(authors_wa)["fold_std"], "ua_std": metrics.spread(authors_ua)["fold_std"],
        }
        record["last_epoch"] = {
            "wa": metrics.spread([u.result["last_epoch"]["wa"] for u in units]),
            "ua": metrics.spread([u.result["last_epoch"]["ua"] for u in units]),
        }
    record.update({
        "profile": config.profile,
        "params_hash": env.params_hash({**config.record(), "seeds": seeds, "folds": record["folds"]}),
        # The content of the feature and split files every unit was trained on: two metrics files with
        # different inputs never describe the same data, whatever their names say.
        "inputs": units[0].result["key"]["inputs"],
        "key_hash": units[0].result["key_hash"],
        "options": units[0].result["options"],  # device, AMP, compile of the training run
        "env": units[0].result["env"],  # versions, CPU, threads; commit and wall times: artifacts/provenance
    })
    return _rounded(record)


def per_class(classes: list[str], true: np.ndarray, pred: np.ndarray, trues: list[np.ndarray],
              preds: list[np.ndarray]) -> dict[str, dict]:
    """Returns per class: recall, precision and F1 pooled over every test row, support, and the recall's
    mean and std over the units whose test rows hold the class (percent)."""
    pooled = metrics.per_class(true, pred, len(classes))
    units = [metrics.per_class(t, p, len(classes))["recall"] for t, p in zip(trues, preds)]
    out = {}
    for i, name in enumerate(classes):
        recalls = [u[i] for u in units if u[i] is not None]
        spread = metrics.spread(recalls) if recalls else {"fold_mean": None, "fold_std": None}
        out[name] = {"recall": pooled["recall"][i], "precision": pooled["precision"][i], "f1": pooled["f1"][i],
                     "support": pooled["support"][i], "recall_fold_mean": spread["fold_mean"],
                     "recall_fold_std": spread["fold_std"]}
    return out


def _rounded(value: Any) -> Any:
    """Returns `value` with every float rounded to DECIMALS, nested lists and dicts included."""
    if isinstance(value, float):
        return round(value, DECIMALS)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def headline(record: dict) -> dict:
    """Returns the metrics a summary table shows, flat: both aggregations of WA and UA, the authors' maxima."""
    if results.NOT_RUN in record:
        return {results.NOT_RUN: record[results.NOT_RUN], "units": 0}
    keys = {"wa_pooled": ("wa", "pooled"), "wa_fold_mean": ("wa", "fold_mean"), "ua_pooled": ("ua", "pooled"),
            "ua_fold_mean": ("ua", "fold_mean"), "authors_wa": ("authors", "wa"), "authors_ua": ("authors", "ua")}
    flat = {name: record[a][b] for name, (a, b) in keys.items() if a in record}
    return {**flat, "units": len(record["per_fold"])}


def train_seconds(config: Resolved, units: list[Unit]) -> float:
    """Returns the units' training wall time from their provenance records (0 for a unit without one)."""
    total = 0.0
    for unit in units:
        path = env.PROVENANCE_DIR / "train" / config.experiment / f"seed_{unit.seed}_fold_{unit.fold}.json"
        try:
            total += float(json.loads(path.read_text(encoding="utf-8")).get("seconds", 0.0))
        except (OSError, ValueError):
            pass  # provenance informs; a missing or unreadable record never stops evaluation
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --experiment to the verb's parser."""
    parser.add_argument("--experiment", required=True, help="a key of params.yaml `experiments`")


def upstreams(config: Resolved, features_dir: Path) -> dict[str, dict]:
    """Returns {feature set: upstream checkpoint identity} for the experiment's sets that ran an upstream."""
    found = {}
    for name in dict.fromkeys((config.spec["features"]["train"], config.spec["features"]["test"])):
        path = features_dir / f"{name}.json"
        summary = results.read_json(path) if path.is_file() else {}
        identity = (summary.get("params") or {}).get("upstream_identity")
        if isinstance(identity, dict):
            found[name] = identity
    return found


def not_run_record(config: Resolved) -> dict[str, Any]:
    """Returns the metrics record of an experiment that could not run: who it is and why, no numbers."""
    return {"experiment": config.experiment, "model": config.spec["model"], "variant": config.spec["variant"],
            "group": config.spec["group"], "protocol": config.spec["protocol"], "profile": config.profile,
            results.NOT_RUN: config.not_run}


def write_outputs(p: EvaluateParams, experiment: str, record: dict, predictions: pd.DataFrame) -> tuple[Path, Path]:
    """Writes the metrics record, its headline and the pooled predictions, each atomically; returns the
    metrics and predictions paths."""
    metrics_path = Path(p.metrics_dir) / f"{experiment}.json"
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    with atomic_path(Path(p.headline_dir) / f"{experiment}.json") as tmp:
        tmp.write_text(json.dumps(headline(record), indent=2) + "\n", encoding="utf-8")
    predictions_path = Path(p.predictions_dir) / f"{experiment}.csv"
    with atomic_path(predictions_path) as tmp:
        predictions.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    return metrics_path, predictions_path


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing the experiment's metrics JSON and its pooled predictions CSV."""
    p = params.load("evaluate", EvaluateParams)
    config = read_resolved(args.experiment)  # stage resolve's file: no model module, no torch
    if config.not_run is not None:
        record = not_run_record(config)
        write_outputs(p, config.experiment, record, pd.DataFrame(columns=list(PREDICTION_COLUMNS)))
        log.info("experiment %s: not run: %s; wrote its record to %s", config.experiment, config.not_run,
                 p.metrics_dir)
        return 0
    split = read_split(split_path(config.spec))
    key = unit_key(config, split)
    units = []
    for seed, fold in plan(config, split):
        directory = unit_dir(config.experiment, seed, fold)
        result, predictions = read_unit(directory, key, config.experiment, split.classes)
        units.append(Unit(seed, fold, result, predictions))
    log.info("read %d units (%d test predictions) of %s under %s", len(units),
             sum(len(u.predictions) for u in units), config.experiment, RUNS_DIR / config.experiment)
    used = dict.fromkeys([split.sidecar["corpora"]["train"], split.sidecar["corpora"]["test"]])
    corpora = {name: fingerprint.describe(name, p.corpora_dir, p.manifest_dir) for name in used}
    speakers = read_speakers(Path(p.manifest_dir) / f"{split.sidecar['corpora']['test']}.csv")
    record = summarise(config, split, units, corpora, speakers)
    found = upstreams(config, Path(p.features_dir))
    if found:  # the checkpoint behind the numbers, named beside them in every table
        record["upstream"] = next(iter(found.values())) if len(found) == 1 else found
    pooled = pd.concat([u.predictions for u in units], ignore_index=True)
    if speakers is not None:  # who spoke each test row: per-speaker analyses need no manifest afterwards
        named = speakers.reindex(pooled["utt_id"])
        pooled.insert(1, "speaker", named["speaker"].to_numpy())
        pooled.insert(2, "session", named["session"].to_numpy())
    metrics_path, predictions_path = write_outputs(p, config.experiment, record, pooled)
    env.write_provenance(Path("evaluate") / config.experiment, metrics=metrics_path.as_posix(),
                         units=len(units), train_seconds=round(train_seconds(config, units), 3))
    log.info("wrote %s (WA pooled %.2f, UA fold mean %.2f over %d units) and %s (%d rows)", metrics_path,
             record["wa"]["pooled"], record["ua"]["fold_mean"], len(units), predictions_path, len(pooled))
    return 0
