"""What a trained unit is, without torch: an experiment's resolved settings, its (seed, fold) units, where each
lives and what its key covers.

`sdcaff train` resolves an experiment from params.yaml (train.load_config, which imports the model's
module); `sdcaff resolve` writes the result to artifacts/experiments/<exp>.json, and `sdcaff evaluate`
reads it back from there. Both then key the units with the functions below, so evaluate checks every unit
against the current inputs exactly as train wrote it, yet starts without torch, the model's module
(SpeechBrain for ECAPA) or the feature loader.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sdcaff import digest, env, params
from sdcaff.errors import ManifestError, ParamsError, SdcaffError

if TYPE_CHECKING:  # the report imports this module for PRIMARY_GROUPS, and nothing of the corpus layer
    from sdcaff.data.split_files import Split

# Stage inputs and outputs, fixed by the contracts in docs/architecture.md.
SPLITS_DIR = Path("artifacts/splits")
FEATURES_DIR = Path("artifacts/features")
RUNS_DIR = Path("artifacts/runs")
EXPERIMENTS_DIR = Path("artifacts/experiments")  # stage resolve: <exp>.json per experiment
SOURCES_FILE = "_params.json"  # beside them: the md5 of the params files they were resolved from

# A model is a file: experiments.<exp>.model names its module by path from the repository root
# (`sdcaff/model`, `baselines/ecapa.py`), which is also that experiment's only model dep in dvc.yaml.
SDCAFF_MODEL = "sdcaff/model"

# The code a unit's numbers depend on besides its model's module. Each train stage in dvc.yaml lists
# these files as deps (tests/test_train.py checks), and a unit's key covers their content.
TRAINING_CODE = ("sdcaff.train", "sdcaff.units", "sdcaff.data.loader", "sdcaff.data.split_files", "sdcaff.metrics",
                 "sdcaff.losses", "sdcaff.env")

# Experiment groups that train every seed of the profile; the others train its first secondary_seeds.
PRIMARY_GROUPS = ("headline", "cross-corpus")

SELECTED_BY = {
    "test_max": "the epoch of maximum test WA (authors' best_matrix); WA and UA maxima are also kept on their own",
    "valid": "the epoch of maximum validation UA, ties broken by validation WA, then the earlier epoch",
}

RUN_SETTINGS = ("jobs", "backend")  # how the units run: switching them changes no result, so no file holds them
UNIT_SETTINGS = ("seeds", "secondary_seeds", "secondary_folds")  # which units run: not part of any one unit's key


def module_name(model: str) -> str:
    """Returns the dotted module name of a model path (`baselines/ecapa.py` -> `baselines.ecapa`)."""
    path = PurePosixPath(model)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.suffix not in ("", ".py"):
        raise ValueError(f"model '{model}' is not a module path from the repository root "
                         f"(e.g. {SDCAFF_MODEL} or baselines/ecapa.py)")
    return ".".join(path.with_suffix("").parts)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """An experiment's resolved settings as plain data: what artifacts/experiments/<exp>.json holds."""

    experiment: str
    profile: str
    spec: dict  # train.Experiment: protocol, features {train, test}, model, variant, group, folds, ...
    model_params: dict  # the model module's Params, every field
    train: dict  # train.TrainParams without RUN_SETTINGS
    env: dict  # env.EnvParams, threads being the unit's share
    not_run: str | None = None  # why the experiment cannot run here, or None

    def as_dict(self) -> dict:
        """Returns the file's content; `not_run` only when set, so every other file stays as it was."""
        data = {"experiment": self.experiment, "profile": self.profile, "spec": self.spec,
                "model_params": self.model_params, "train": self.train, "env": self.env}
        if self.not_run is not None:
            data["not_run"] = self.not_run
        return data

    def record(self) -> dict:
        """Returns the settings a unit's result depends on, as plain data (which units run left out)."""
        return {
            "profile": self.profile,
            "protocol": self.spec["protocol"],
            "features": self.spec["features"],
            "model": self.spec["model"],
            "model_params": self.model_params,
            "train": {k: v for k, v in self.train.items() if k not in UNIT_SETTINGS},
            "env": self.env,
        }

    def hash(self) -> str:
        """Returns a short hash of record(), the settings part of a unit's key (unit_key adds inputs and code)."""
        return env.params_hash(self.record())


def resolved_path(experiment: str, directory: Path = EXPERIMENTS_DIR) -> Path:
    """Returns the file stage resolve writes for `experiment`."""
    return directory / f"{experiment}.json"


def params_sources() -> dict[str, str | None]:
    """Returns {file: md5} of the params file in use and of profile.yaml beside it (None where absent)."""
    path = params.params_path()
    beside = path.parent / params.PROFILE_FILE
    return {f.as_posix(): digest.file_md5(f) if f.is_file() else None for f in (path, beside)}


def read_resolved(experiment: str, directory: Path = EXPERIMENTS_DIR) -> Resolved:
    """Returns the experiment's settings as `sdcaff resolve` wrote them; a missing, bad or stale file raises.

    Stale: the params files changed since (DVC reruns resolve first; a hand-run evaluate would otherwise
    check the units against settings that are no longer the current ones).
    """
    sources = directory / SOURCES_FILE
    if sources.is_file() and json.loads(sources.read_text(encoding="utf-8")) != params_sources():
        raise SdcaffError(f"{directory}: resolved from other params than the current "
                          f"{', '.join(params_sources())}; run `sdcaff resolve` (or `dvc repro`)")
    path = resolved_path(experiment, directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SdcaffError(f"{path}: missing; run `sdcaff resolve` (or `dvc repro`) to resolve experiment "
                          f"'{experiment}' from params.yaml") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    fields = [f.name for f in dataclasses.fields(Resolved)]
    missing = [name for name in fields[:-1] if name not in data]
    unknown = sorted(set(data) - set(fields))
    if missing or unknown or data["experiment"] != experiment:
        raise ManifestError(f"{path}: not the resolved settings of '{experiment}' (missing {missing}, unknown "
                            f"{unknown}); run `sdcaff resolve`")
    return Resolved(**data)


def split_path(spec: dict) -> Path:
    """Returns the experiment's split CSV (its JSON sidecar lies beside it)."""
    return SPLITS_DIR / f"{spec['protocol']}.csv"


def feature_paths(spec: dict) -> list[Path]:
    """Returns the feature files the experiment reads (one, or two for cross-corpus)."""
    sets = spec["features"]
    return list(dict.fromkeys(FEATURES_DIR / f"{s}.pt" for s in (sets["train"], sets["test"])))


def unit_dir(experiment: str, seed: int, fold: int, runs_dir: Path = RUNS_DIR) -> Path:
    """Returns the directory one (seed, fold) unit writes, and only it."""
    return runs_dir / experiment / f"seed_{seed}" / f"fold_{fold}"


def plan(resolved: Resolved, split: Split) -> list[tuple[int, int]]:
    """Returns the experiment's (seed, fold) units, seeds outer, in the order they are listed."""
    folds = list(range(int(split.sidecar["folds"])))
    p = resolved.train
    seeds = list(p["seeds"])
    chosen, where = resolved.spec.get("folds"), f"experiments.{resolved.experiment}.folds"
    if resolved.spec["group"] not in PRIMARY_GROUPS:
        seeds = seeds[: p["secondary_seeds"]]
        if chosen is None and p["secondary_folds"] is not None:
            # A protocol with fewer folds (cross-corpus: one) keeps the ones it has.
            chosen, where = [f for f in p["secondary_folds"] if f in folds], "train.secondary_folds"
    if chosen is not None:
        unknown = sorted(set(chosen) - set(folds))
        if unknown or not chosen:
            what = f"{unknown} not among" if unknown else "none of"
            raise ParamsError(f"{where}: {what} the folds {folds} of {split.csv_path}")
        folds = [f for f in folds if f in chosen]
    return [(seed, fold) for seed in seeds for fold in folds]


def versions() -> dict[str, str]:
    """Returns the installed torch and NumPy versions (as pip recorded them; torch is not imported)."""
    return {name: importlib.metadata.version(name) for name in ("torch", "numpy")}


def unit_key(resolved: Resolved, split: Split) -> dict:
    """Returns everything a unit's result depends on: settings, and the content of its inputs and code."""
    inputs = [*feature_paths(resolved.spec), split.csv_path, split.csv_path.with_suffix(".json")]
    return {
        "config": resolved.record(),
        "inputs": {p.as_posix(): digest.file_md5(p) for p in inputs},
        "code": digest.code_digest([*TRAINING_CODE, module_name(resolved.spec["model"])]),
        "versions": versions(),
    }


def is_done(directory: Path, expected_hash: str) -> bool:
    """Returns whether the unit in `directory` finished under the same settings."""
    done = directory / "done"
    return done.is_file() and done.read_text(encoding="utf-8").strip() == expected_hash

