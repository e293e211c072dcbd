"""Stage train: one experiment's (seed, fold) units -> artifacts/runs/<exp>/seed_<s>/fold_<k>/, each on its own.

A unit writes log.csv (one row per epoch), checkpoint.pt (the selected weights), predictions.csv (the
test rows under those weights), fused.npy (their fused vectors, the rows of predictions.csv: what the
report's t-SNE draws, so the report never runs a model), result.json, and `done` last. Epochs are
numbered from 1 everywhere: log lines, log.csv, result.json (`selected_epoch`, the authors' maxima),
`lr_drop_epochs`. While it runs it keeps resume.pt, the state after the last finished epoch, so a killed
unit resumes where it stopped with the same result.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import importlib
import importlib.util
import json
import logging
import logging.handlers
import math
import multiprocessing
import os
import shutil
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, Callable, Iterator, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from sdcaff import cluster, env, metrics, params, units
from sdcaff.data.loader import Features, Split, UtteranceDataset, load_features, make_loader, read_split
from sdcaff.errors import ParamsError, SdcaffError
from sdcaff.files import atomic_path
from sdcaff.losses import LossParams, MultiTaskLoss, scale_center_grads
from sdcaff.model import load_params
from sdcaff.units import (FEATURES_DIR, PRIMARY_GROUPS, RUN_SETTINGS, RUNS_DIR, SDCAFF_MODEL, SELECTED_BY,  # noqa: F401
                          SPLITS_DIR, TRAINING_CODE, Resolved, is_done, module_name, unit_dir)

log = logging.getLogger(__name__)

# Where units, splits and features live, which groups train every seed, what a unit's key covers: sdcaff/units.py.
# A model is a file: experiments.<exp>.model names its module by path from the repository root
# (`sdcaff/model`, `baselines/ecapa.py`), which is also that experiment's only model dep in dvc.yaml.
# The module has a frozen dataclass `Params` (its sizes) and `build(params) -> nn.Module` whose
# forward(static, dynamic) returns sdcaff.model.ModelOutput (docs/adding-a-model.md). Its sizes come
# from the profile's `baselines.<path>` block (the `model` block for SD-CAFF), plus the keys of the
# profile's `model` block the dataclass also has (n_classes, ...); experiments.<exp>.model_params
# overrides both. Modules are imported on first use: SpeechBrain costs a process ~1 s and sets torch flags.
PROGRESS_EVERY_S = 30.0  # a progress line at least this often while a unit trains (and after its first batch)


def import_model(model: str) -> ModuleType:
    """Returns the model module at path `model`: imported by name, or from its file under the working directory."""
    name = module_name(model)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a module that is not on the import path is looked for as a file; a missing dependency
        # inside the module is the module's own error.
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise
        path = Path(model)
        file = path if path.suffix == ".py" else path / "__init__.py"
        if not file.is_file():
            raise
        package = [str(path)] if file.name == "__init__.py" else None
        spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=package)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


def model_entry(model: str) -> tuple[type, Callable[[Any], nn.Module]]:
    """Returns the params dataclass and the builder of the model module at path `model`."""
    module = import_model(model)
    missing = [name for name in ("Params", "build") if not hasattr(module, name)]
    if missing:
        raise ValueError(f"model module {module.__file__} lacks {' and '.join(missing)} (docs/adding-a-model.md)")
    return module.Params, module.build


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """One profile's training settings; the defaults are the authors' (the paper profile)."""

    epochs: int = 30  # authors' code: Epoch = 30
    batch_size: int = 32  # authors' code: BatchSize = 32, shuffled
    lr: float = 5.0e-4  # authors' code: learning_rate
    weight_decay: float = 1.0e-6  # authors' code: Adam(weight_decay=1e-6) over model and centers
    lr_drop_epochs: tuple[int, ...] = (11, 21)  # authors' code: lr /= 10 after epochs 11 and 21 (from 1)
    lr_drop_factor: float = 0.1  # authors' code: /10
    seeds: tuple[int, ...] = (987654,)  # authors' code: setup_seed(987654)
    secondary_seeds: int = 1  # comparison, baseline and ablation experiments train the first N seeds
    secondary_folds: tuple[int, ...] | None = None  # ... and only these folds; null = every fold
    loss: LossParams = LossParams()
    num_workers: int = 0  # loader processes; 0 keeps loading in the training process
    jobs: int = 1  # units trained at once, each in its own process with env.threads // jobs threads
    # Where the units train: here, or as a SLURM job array (params `slurm`, sdcaff/cluster.py). Overridden
    # per run by --backend or SDCAFF_TRAIN_BACKEND; a unit's result does not depend on it.
    backend: Literal["local", "slurm"] = "local"

    def problems(self) -> list[str]:
        """Returns what is out of range, in words; empty when every value can train."""
        found = []
        if self.epochs < 1:
            found.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:  # batch norm after pooling cannot normalise a batch of one
            found.append(f"batch_size must be at least 2, got {self.batch_size}")
        for name in ("lr", "weight_decay", "lr_drop_factor"):
            value = getattr(self, name)
            low_ok = value > 0 if name != "weight_decay" else value >= 0
            if not math.isfinite(value) or not low_ok:
                found.append(f"{name} must be a finite number {'>= 0' if name == 'weight_decay' else '> 0'}, "
                             f"got {value}")
        if not self.seeds:
            found.append("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            found.append(f"seeds {list(self.seeds)} repeat a seed")
        if self.jobs < 1 or self.secondary_seeds < 1:
            found.append("jobs and secondary_seeds must be at least 1")
        if self.num_workers < 0:
            found.append(f"num_workers must be at least 0, got {self.num_workers}")
        return found


@dataclasses.dataclass(frozen=True)
class FeatureSets:
    train: str  # feature set (artifacts/features/<set>.pt) holding the train and valid rows
    test: str  # feature set holding the test rows: the same set unless the protocol is cross-corpus


@dataclasses.dataclass(frozen=True)
class Experiment:
    protocol: str  # split files artifacts/splits/<protocol>.csv + .json
    features: FeatureSets
    model: str = SDCAFF_MODEL  # the model module's path (see SDCAFF_MODEL); dvc.yaml reads it, so params name it
    variant: str = "sdcaff"  # the report's row: the same id under every protocol (cnn, no-dyrelu, ecapa, ...)
    group: Literal["headline", "cross-corpus", "comparison", "baseline", "ablation"] = "headline"
    model_params: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of profiles.<p>.model
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of profiles.<p>.train
    folds: tuple[int, ...] | None = None  # null = every fold of the protocol


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one experiment trains with, resolved from params.yaml."""

    experiment: str
    profile: str
    spec: Experiment
    model_params: Any  # model_entry(spec.model)[0]
    train: TrainParams
    env: env.EnvParams
    not_run: str | None = None  # why the experiment cannot run here (not_run_reason), or None

    def resolved(self) -> Resolved:
        """Returns the settings as plain data, as stage resolve writes them (how the units run left out)."""
        train = params.to_dict(self.train)
        for key in RUN_SETTINGS:  # switching a finished study to a cluster or more workers changes no result
            del train[key]
        return Resolved(self.experiment, self.profile, params.to_dict(self.spec), params.to_dict(self.model_params),
                        train, params.to_dict(self.env), self.not_run)

    def record(self) -> dict:
        """Returns the settings a unit's result depends on, as plain data (seeds and folds left out)."""
        return self.resolved().record()

    def hash(self) -> str:
        """Returns a short hash of record(), the settings part of a unit's key (unit_key adds inputs and code)."""
        return env.params_hash(self.record())


@dataclasses.dataclass(frozen=True)
class Options:
    device: torch.device
    amp: bool  # bf16 autocast (CUDA only)
    compile: bool  # torch.compile the model

    def record(self) -> dict:
        """Returns the options as plain data, for result.json."""
        return {"device": self.device.type, "amp": self.amp, "compile": self.compile}


def load_config(experiment: str, path: str | Path | None = None) -> Config:
    """Returns the experiment's settings: its entry in `experiments` over the current profile's blocks."""
    path = Path(path) if path is not None else params.params_path()
    data, lines = params.read(path)
    profile, _ = load_params(path=path)  # checks `profile` and the profile's model block
    section = data["profiles"][profile]
    if "train" not in section:
        raise ParamsError(f"{path}:{lines[('profiles', profile)]}: profile '{profile}' lacks a 'train' block")
    params.build(TrainParams, section["train"], path, lines, ("profiles", profile, "train"))
    experiments = data.get("experiments")
    if not isinstance(experiments, dict):
        raise ParamsError(f"{path}: missing section 'experiments'")
    if experiment not in experiments:
        raise ParamsError(f"{path}:{lines[('experiments',)]}: unknown experiment '{experiment}'; "
                          f"known: {', '.join(sorted(experiments))}")
    keypath = ("experiments", experiment)
    spec = params.build(Experiment, experiments[experiment], path, lines, keypath)
    where = f"{path}:{lines.get(keypath + ('model',), lines[keypath])}"
    try:
        params_cls, _ = model_entry(spec.model)
    except ModuleNotFoundError as exc:
        raise ParamsError(f"{where}: model '{spec.model}': no module {module_name(spec.model)} ({exc})") from exc
    except ValueError as exc:
        raise ParamsError(f"{where}: {exc}") from exc
    shared = {f.name for f in dataclasses.fields(params_cls)}
    base_model = {k: v for k, v in section["model"].items() if k in shared}
    if spec.model != SDCAFF_MODEL:
        # A model without a sizes block in this profile trains at its dataclass defaults.
        sizes = (section.get("baselines") or {}).get(spec.model) or {}
        base_model = merge(base_model, sizes)
        # Checked on its own first, so an error in it is named at its own line.
        params.build(params_cls, base_model, path, lines, ("profiles", profile, "baselines", spec.model))
    # The profile's blocks are checked above, so an error in a merged block is the experiment's override.
    model_params = params.build(params_cls, merge(base_model, spec.model_params), path, lines,
                                keypath + ("model_params",))
    problems = model_params.problems() if hasattr(model_params, "problems") else []
    if problems:
        raise ParamsError(f"{path}:{lines[keypath]}: experiment '{experiment}' model: " + "; ".join(problems))
    train = params.build(TrainParams, merge(section["train"], spec.train), path, lines, keypath + ("train",))
    if train.problems():
        line = lines.get(keypath + ("train",), lines[("profiles", profile, "train")])
        raise ParamsError(f"{path}:{line}: experiment '{experiment}' train (profile '{profile}' with its "
                          f"overrides): " + "; ".join(train.problems()))
    env_params = params.build(env.EnvParams, data.get("env", {}), path, lines, ("env",))
    if env_params.threads < 1:
        raise ParamsError(f"{path}:{lines.get(('env', 'threads'), 1)}: env.threads must be at least 1, "
                          f"got {env_params.threads}")
    # A unit's numbers depend on its thread count, so its share of the pinned threads is one of its settings.
    env_params = dataclasses.replace(env_params, threads=max(1, env_params.threads // train.jobs))
    return Config(experiment, profile, spec, model_params, train, env_params, not_run_reason(data, spec, profile))


def not_run_reason(data: dict, spec: Experiment, profile: str) -> str | None:
    """Returns why the experiment cannot run with these params, in words, or None when it can.

    A feature set of kind `ssl` needs an upstream checkpoint, which the default study never downloads: with
    none configured (for this profile) its experiments are skipped (train and evaluate say so, the report
    lists them).
    """
    defaults = data.get("features") or {}
    sets = data.get("feature_sets") or {}
    for name in dict.fromkeys((spec.features.train, spec.features.test)):
        reason = params.no_upstream_reason(name, {**defaults, **(sets.get(name) or {})}, profile)
        if reason:
            return reason
    return None


def merge(base: dict, overrides: dict) -> dict:
    """Returns `base` with `overrides` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def split_path(config: Config) -> Path:
    """Returns the experiment's split CSV (its JSON sidecar lies beside it)."""
    return units.split_path(params.to_dict(config.spec))


def feature_paths(config: Config) -> list[Path]:
    """Returns the feature files the experiment reads (one, or two for cross-corpus)."""
    return units.feature_paths(params.to_dict(config.spec))


def plan(config: Config, split: Split) -> list[tuple[int, int]]:
    """Returns the experiment's (seed, fold) units, seeds outer, in the order they are listed."""
    return units.plan(config.resolved(), split)


def unit_key(config: Config, split: Split) -> dict:
    """Returns everything a unit's result depends on: settings, and the content of its inputs and code."""
    return units.unit_key(config.resolved(), split)  # load_config imported the model's module: its code is read


def unit_hash(key: dict, options: Options) -> str:
    """Returns the hash a finished unit's `done` marker holds: its key plus the AMP/compile options."""
    return env.params_hash({"key": key, "amp": options.amp, "compile": options.compile})


def autocast(options: Options):
    """Returns the bf16 autocast context when AMP is on, a disabled one otherwise."""
    return torch.autocast(device_type=options.device.type, dtype=torch.bfloat16, enabled=options.amp)


def lr_schedule(optimizer: torch.optim.Optimizer, p: TrainParams) -> torch.optim.lr_scheduler.MultiStepLR:
    """Returns the lr schedule, stepped once after each epoch."""
    # Epochs count from 1 and the schedule steps after each: after epoch e it has stepped e times. The
    # authors' code divides after finishing epoch 11 (their 0-based 10) and 21: epochs 1-11 run at the full lr.
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(p.lr_drop_epochs), gamma=p.lr_drop_factor)


class BatchLog:
    """Progress lines a log file can show (tqdm draws no bar there): the unit's first batch, then one every
    `every_s` seconds with batches per second and the epoch's ETA."""

    def __init__(self, name: str, every_s: float | None = None):
        self.name, self.every_s = name, PROGRESS_EVERY_S if every_s is None else every_s
        self.started = time.perf_counter()
        self.first = True
        self.epoch, self.epochs, self.epoch_start, self.last = 0, 0, self.started, self.started

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch, self.epochs = epoch, epochs
        self.epoch_start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.first and now - self.last < self.every_s:
            return
        rate = done / max(now - self.epoch_start, 1e-9)
        what = "first batch" if self.first else f"batch {done}/{total}"
        log.info("%s epoch %d/%d: %s after %.1f s, %.2f batches/s, epoch ETA %.0f s", self.name, self.epoch + 1,
                 self.epochs, what, now - (self.started if self.first else self.epoch_start), rate,
                 (total - done) / rate)
        self.first, self.last = False, now


def train_epoch(
    model: nn.Module, loss_fn: MultiTaskLoss, optimizer: torch.optim.Optimizer, loader, options: Options,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Returns the epoch's mean loss per utterance, and the true and predicted classes (N,) seen in training.

    `progress(batches done, batches in the epoch)` is called after every batch.
    """
    model.train()
    batches = len(loader)
    lr = optimizer.param_groups[0]["lr"]
    total, count, trues, preds = 0.0, 0, [], []
    for static, dynamic, emotion, gender, _ in loader:
        if len(emotion) == 1:
            # Batch norm after global pooling cannot normalise one example; a training set one past a
            # multiple of the batch size leaves its last, shuffled, utterance out of this epoch.
            continue
        static, dynamic = static.to(options.device), dynamic.to(options.device)
        emotion, gender = emotion.to(options.device), gender.to(options.device)
        with autocast(options):
            out = model(static, dynamic)
            parts = loss_fn(out, emotion, gender)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        # authors' code: the emotion centers' gradients are rescaled with the current lr before the step.
        scale_center_grads(loss_fn, lr)
        optimizer.step()
        total += parts.total.item() * len(emotion)
        count += len(emotion)
        trues.append(emotion.cpu())
        preds.append(out.emotion.detach().argmax(dim=1).cpu())
        if progress is not None:
            progress(len(trues), batches)
    return total / count, torch.cat(trues).numpy(), torch.cat(preds).numpy()


@torch.no_grad()
def predict(model: nn.Module, loader, options: Options,
            fused: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns true classes (N,) and class probabilities (N, n_classes) in eval mode.

    With `fused` (a list), appends the fused vectors (N, D) of the same rows to it, as float32.
    """
    model.eval()
    trues, probs, vectors = [], [], []
    for static, dynamic, emotion, _, _ in loader:
        with autocast(options):
            out = model(static.to(options.device), dynamic.to(options.device))
        probs.append(torch.softmax(out.emotion.float(), dim=1).cpu())
        trues.append(emotion)
        if fused is not None:
            vectors.append(out.fused.float().cpu())
    if fused is not None:
        fused.append(torch.cat(vectors).numpy())
    return torch.cat(trues).numpy(), torch.cat(probs).numpy()


def scores(true: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Returns WA, UA and the authors' rounded UA, in percent."""
    return {
        "wa": metrics.weighted_accuracy(true, pred),
        "ua": metrics.unweighted_accuracy(true, pred),
        "ua_authors": metrics.authors_ua(true, pred, n_classes),
    }


@dataclasses.dataclass
class Selection:
    """The selection rule over epochs: keeps the best key seen so far and that epoch's weights."""

    rule: str  # test_max or valid
    epoch: int | None = None
    key: tuple | None = None
    state: dict | None = None

    def offer(self, epoch: int, row: dict, model: nn.Module) -> None:
        """Keeps `model`'s weights if this epoch beats the best so far (strictly: the earlier epoch wins ties)."""
        # authors' code: `if maxWA < WA` on the test fold. Honest rule: validation UA, since WA would
        # favour the majority class; validation WA breaks ties.
        key = (row["test_wa"],) if self.rule == "test_max" else (row["valid_ua"], row["valid_wa"])
        if self.key is None or key > self.key:
            self.epoch, self.key = epoch, key
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Returns whether two role slices hold the same utterances in the same order (the authors' valid = test)."""
    return a["utt_id"].tolist() == b["utt_id"].tolist() and a["label"].tolist() == b["label"].tolist()


def train_unit(config: Config, split: Split, features: Features, seed: int, fold: int, options: Options,
               runs_dir: Path = RUNS_DIR) -> dict:
    """Returns the unit's result record after training it (or finishing it from resume.pt) and writing its files.

    Holds the unit's lock meanwhile: a second stage (or backend) that reaches the same unit waits, then
    finds it done and returns its result instead of training it again.
    """
    directory = unit_dir(config.experiment, seed, fold, runs_dir)
    key = unit_key(config, split)
    expected = unit_hash(key, options)
    with unit_lock(runs_dir.parent / "locks" / config.experiment / f"seed_{seed}_fold_{fold}.lock"):
        if is_done(directory, expected):
            log.info("%s: trained meanwhile by another process", directory)
            return {**json.loads((directory / "result.json").read_text(encoding="utf-8")), "seconds": 0.0}
        return _train_unit(config, split, features, seed, fold, options, runs_dir, directory, key, expected)


@contextlib.contextmanager
def unit_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `path` (flock: released by the kernel when the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            log.info("%s: held by %s; waiting for it", path, handle.read().strip() or "another process")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_unit(config: Config, split: Split, features: Features, seed: int, fold: int, options: Options,
                runs_dir: Path, directory: Path, key: dict, expected: str) -> dict:
    env.configure(config.env)
    env.seed_everything(seed)
    p, classes, n_classes = config.train, split.classes, len(split.classes)
    datasets = {role: UtteranceDataset(features, split.select(fold, role), classes, split.csv_path)
                for role in ("train", "valid", "test")}
    for role, dataset in datasets.items():
        if len(dataset) == 0:
            raise SdcaffError(f"{split.csv_path}: fold {fold} has no '{role}' rows")
    rule = split.sidecar["selection"]
    valid_is_test = same_rows(split.select(fold, "valid"), split.select(fold, "test"))

    _, builder = model_entry(config.spec.model)
    model = builder(config.model_params).to(options.device)
    loss_fn = MultiTaskLoss(p.loss, n_classes).to(options.device)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=p.lr,
                                 weight_decay=p.weight_decay)
    scheduler = lr_schedule(optimizer, p)
    generator = torch.Generator().manual_seed(seed)
    if options.compile and config.env.deterministic:
        env.deterministic_algorithms(torch, compiler=True)  # inductor's own flag, for the compiled kernels
    forward = torch.compile(model) if options.compile else model
    loaders = {
        "train": make_loader(datasets["train"], p.batch_size, True, generator, p.num_workers),
        "valid": make_loader(datasets["valid"], p.batch_size, False, num_workers=p.num_workers),
        "test": make_loader(datasets["test"], p.batch_size, False, num_workers=p.num_workers),
    }
    selection, history, seconds = Selection(rule), [], []
    resume = _load_resume(directory, expected)
    if resume is not None:
        model.load_state_dict(resume["model"])
        loss_fn.load_state_dict(resume["loss"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        if options.device.type == "cuda":
            torch.cuda.set_rng_state_all(resume["cuda_rng"])
        history, seconds = resume["history"], resume["seconds"]
        selection = Selection(rule, resume["selection_epoch"], tuple(resume["selection_key"]),
                              resume["selection_state"])
        log.info("%s: resuming after epoch %d of %d", directory, len(history), p.epochs)
    elif directory.exists():
        # Trained under other settings, inputs or code, or half-finished before its first epoch was saved.
        log.info("%s: not trained on the current inputs and settings: training it anew", directory)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)

    batch_log = BatchLog(f"{config.experiment} seed {seed} fold {fold}")
    for epoch in range(len(history), p.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        batch_log.start_epoch(epoch, p.epochs)
        loss, train_true, train_pred = train_epoch(forward, loss_fn, optimizer, loaders["train"], options, batch_log)
        scheduler.step()
        valid_true, valid_prob = predict(forward, loaders["valid"], options)
        valid = scores(valid_true, valid_prob.argmax(axis=1), n_classes)
        test = {"wa": None, "ua": None, "ua_authors": None}
        if rule == "test_max":
            # authors' code scores the test fold after every epoch; their valid rows are the test rows.
            if valid_is_test:
                test_true, test_prob = valid_true, valid_prob
            else:
                test_true, test_prob = predict(forward, loaders["test"], options)
            test = scores(test_true, test_prob.argmax(axis=1), n_classes)
        train = scores(train_true, train_pred, n_classes)
        row = {
            "epoch": epoch + 1, "loss": loss,
            "train_wa": train["wa"], "train_ua": train["ua"],
            "valid_wa": valid["wa"], "valid_ua": valid["ua"],
            "test_wa": test["wa"], "test_ua": test["ua"], "test_ua_authors": test["ua_authors"],
            "lr": lr,
        }
        selection.offer(epoch, row, model)
        history.append(row)
        # Wall times never enter the unit's files (DVC caches them): they go to its provenance record.
        seconds.append(time.perf_counter() - start)
        _save_resume(directory, expected, model, loss_fn, optimizer, scheduler, generator, options, history,
                     seconds, selection)
        log.info(
            "%s seed %d fold %d epoch %d/%d: loss %.4f, valid WA %.2f UA %.2f%s, lr %.1e, %.1f s, unit ETA %.0f s",
            config.experiment, seed, fold, epoch + 1, p.epochs, loss, valid["wa"], valid["ua"],
            f", test WA {test['wa']:.2f} UA {test['ua']:.2f}" if test["wa"] is not None else "",
            lr, seconds[-1], sum(seconds) / len(seconds) * (p.epochs - epoch - 1),
        )

    model.load_state_dict(selection.state)
    fused: list[np.ndarray] = []
    test_true, test_prob = predict(model, loaders["test"], options, fused)
    result = _result(config, split, seed, fold, selection, history, test_true, test_prob, options, key, expected)
    _write_unit(directory, config, split, seed, fold, selection, history, test_prob, fused[0], result)
    env.write_provenance(Path("train") / config.experiment / f"seed_{seed}_fold_{fold}",
                         runs_dir.parent / "provenance", unit=directory.as_posix(), unit_hash=expected,
                         epoch_seconds=[round(s, 3) for s in seconds], seconds=round(sum(seconds), 3),
                         slurm_job=cluster.job_name())
    return {**result, "seconds": sum(seconds)}  # for the caller's progress line only


def _load_resume(directory: Path, expected: str) -> dict | None:
    """Returns the unit's resume state if it was saved under the same settings, else None."""
    path = directory / "resume.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("unit_hash") == expected else None


def _save_resume(directory: Path, expected: str, model: nn.Module, loss_fn: nn.Module, optimizer, scheduler,
                 generator: torch.Generator, options: Options, history: list[dict], seconds: list[float],
                 selection: Selection) -> None:
    """Writes resume.pt: weights, optimiser, scheduler, RNG states and history after the last epoch."""
    # Training draws randomness only from torch: the shuffling generator and the global RNG (dropout);
    # Python's and NumPy's generators are not used after seeding, so they need no saving.
    state = {
        "unit_hash": expected,
        "model": model.state_dict(),
        "loss": loss_fn.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if options.device.type == "cuda" else [],
        "history": history,
        "seconds": seconds,
        "selection_epoch": selection.epoch,
        "selection_key": list(selection.key),
        "selection_state": selection.state,
    }
    with atomic_path(directory / "resume.pt") as tmp:
        torch.save(state, tmp)


def _result(config: Config, split: Split, seed: int, fold: int, selection: Selection, history: list[dict],
            test_true: np.ndarray, test_prob: np.ndarray, options: Options, key: dict, expected: str) -> dict:
    """Returns the unit's result record (percent): selected epoch, its test scores, and the authors' maxima."""
    n_classes = len(split.classes)
    test_pred = test_prob.argmax(axis=1)
    chosen = history[selection.epoch]  # Selection counts from 0, like the history list; the record from 1
    result = {
        "experiment": config.experiment, "seed": seed, "fold": fold, "protocol": config.spec.protocol,
        "profile": config.profile, "model": config.spec.model, "labels": split.classes,
        "selection": split.sidecar["selection"], "selected_by": SELECTED_BY[split.sidecar["selection"]],
        "selected_epoch": selection.epoch + 1, "epochs": len(history),
        "test": {**scores(test_true, test_pred, n_classes), "n": len(test_true),
                 "confusion": metrics.confusion(test_true, test_pred, n_classes).tolist()},
        "valid": {"wa": chosen["valid_wa"], "ua": chosen["valid_ua"]},
    }
    if split.sidecar["selection"] == "test_max":
        wa_epoch = max(range(len(history)), key=lambda e: (history[e]["test_wa"], -e))
        ua_epoch = max(range(len(history)), key=lambda e: (history[e]["test_ua_authors"], -e))
        last = history[-1]
        result["authors"] = {"wa": history[wa_epoch]["test_wa"], "wa_epoch": wa_epoch + 1,
                             "ua": history[ua_epoch]["test_ua_authors"], "ua_epoch": ua_epoch + 1}
        result["last_epoch"] = {"epoch": len(history), "wa": last["test_wa"], "ua": last["test_ua"],
                                "ua_authors": last["test_ua_authors"]}
    result.update({
        # What the unit was trained on, so evaluate can refuse it once any of it changes (and say what).
        "key": key, "key_hash": env.params_hash(key), "unit_hash": expected,
        "options": options.record(), "env": env.record(),
    })
    return result


def _write_unit(directory: Path, config: Config, split: Split, seed: int, fold: int, selection: Selection,
                history: list[dict], test_prob: np.ndarray, fused: np.ndarray, result: dict) -> None:
    """Writes log.csv, checkpoint.pt, predictions.csv, fused.npy, result.json, then `done`; drops resume.pt."""
    with atomic_path(directory / "log.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False, lineterminator="\n")
    with atomic_path(directory / "checkpoint.pt") as tmp:
        torch.save({"model": config.spec.model, "model_params": params.to_dict(config.model_params),
                    "labels": split.classes, "epoch": selection.epoch + 1, "state_dict": selection.state}, tmp)
    rows = split.select(fold, "test")
    predictions = pd.DataFrame({
        "utt_id": rows["utt_id"].to_numpy(), "fold": fold, "seed": seed, "true": rows["label"].to_numpy(),
        "predicted": np.asarray(split.classes)[test_prob.argmax(axis=1)],
    })
    for c, name in enumerate(split.classes):
        predictions[f"p_{name}"] = test_prob[:, c]
    with atomic_path(directory / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    with atomic_path(directory / "fused.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, fused.astype(np.float32), allow_pickle=False)
    with atomic_path(directory / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (directory / "resume.pt").unlink(missing_ok=True)
    with atomic_path(directory / "done") as tmp:
        tmp.write_text(result["unit_hash"] + "\n", encoding="utf-8")


def check_inputs(config: Config, split: Split, features: Features) -> None:
    """Raises if the split's classes or the features' shape do not fit the model's params."""
    n_classes = getattr(config.model_params, "n_classes", len(split.classes))
    if n_classes != len(split.classes):
        raise ParamsError(f"{split.csv_path.with_suffix('.json')}: {len(split.classes)} classes "
                          f"{split.classes}, but the model has n_classes {n_classes}")
    expected = (getattr(config.model_params, "n_mfcc", None), getattr(config.model_params, "frames", None))
    got = tuple(features.mfcc.shape[1:])
    if None not in expected and got != expected:
        raise SdcaffError(f"{', '.join(map(str, features.paths))}: features are {got[0]} x {got[1]}, "
                          f"the model expects n_mfcc x frames = {expected[0]} x {expected[1]}")
    pooled = (getattr(config.model_params, "layers", None), getattr(config.model_params, "dim", None))
    # An upstream's hidden states, pooled (layers, dim) or frame by frame (layers x dim, frames): another
    # checkpoint, or other ssl_layers, than the head's sizes.
    if None not in pooled and got != pooled and got[0] != pooled[0] * pooled[1]:
        raise SdcaffError(f"{', '.join(map(str, features.paths))}: features are {got[0]} x {got[1]}, the head "
                          f"expects layers x dim = {pooled[0]} x {pooled[1]} (pooled) or {pooled[0] * pooled[1]} "
                          f"x frames (frame level); set them in profiles.<profile>.baselines.{config.spec.model} "
                          f"to match the upstream and ssl_layers (docs/ssl.md)")


def train_units(config: Config, split: Split, todo: list[tuple[int, int]], options: Options,
                jobs: int | None = None) -> Iterator[dict]:
    """Yields each unit's result as it finishes: here, or in `jobs` (train.jobs) worker processes at once."""
    jobs = min(jobs or config.train.jobs, len(todo))
    if jobs == 1:
        features = load_features(feature_paths(config))
        check_inputs(config, split, features)
        for seed, fold in todo:
            yield train_unit(config, split, features, seed, fold, options)
        return
    if options.device.type == "cpu" and "fork" in multiprocessing.get_all_start_methods():
        # fork: the workers start with torch imported and the inputs read, here, once (copy-on-write pages),
        # instead of each importing and reading them again (~4 s of a 5-unit stage, measured). A forked child
        # inherits an OpenMP thread pool in an unusable state, so the parent creates none: its torch ops run
        # on one thread (OpenMP then starts no pool); each unit sets its own count (env.configure).
        torch.set_num_threads(1)
        _worker_inputs(config.experiment)
        context = multiprocessing.get_context("fork")
    else:  # CUDA cannot be used in a forked child once the parent has touched it
        context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    root = logging.getLogger()
    listener = logging.handlers.QueueListener(queue, *root.handlers, respect_handler_level=True)
    listener.start()
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(queue, root.level)) as pool:
            futures = [pool.submit(_worker_unit, config.experiment, seed, fold, options.device.type, options.amp,
                                   options.compile) for seed, fold in todo]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:  # after a failure, units not yet started are not started
                    future.cancel()
    finally:
        listener.stop()


def _start_worker(queue, level: int) -> None:
    """Sends a worker process's log records to the parent, which prints them."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(level)


@functools.lru_cache(maxsize=1)
def _worker_inputs(experiment: str) -> tuple[Config, Split, Features]:
    """Returns the experiment's settings, split and features, read once per worker process."""
    config = load_config(experiment)
    split = read_split(split_path(config))
    features = load_features(feature_paths(config))
    check_inputs(config, split, features)
    return config, split, features


def _worker_unit(experiment: str, seed: int, fold: int, device: str, amp: bool, compile_model: bool) -> dict:
    """Returns one unit's result, trained in a worker process."""
    config, split, features = _worker_inputs(experiment)
    return train_unit(config, split, features, seed, fold, Options(torch.device(device), amp, compile_model))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --experiment, --seed, --fold, --device, --amp and --compile to the verb's parser."""
    parser.add_argument("--experiment", required=True, help="a key of params.yaml `experiments`")
    parser.add_argument("--seed", type=int, action="append", help="only this seed (repeatable); default: all")
    parser.add_argument("--fold", type=int, action="append", help="only this fold (repeatable); default: all")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: params env.device")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only; changes the numbers)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--backend", choices=cluster.BACKENDS,
                        help=f"where the units train (default: ${cluster.BACKEND_VARIABLE}, else params train.backend)")


def run(args: argparse.Namespace) -> int:
    """Returns 0 after training every unit of the experiment (or the chosen seeds/folds) not yet done."""
    config = load_config(args.experiment)
    if config.not_run is not None:
        # DVC still needs the stage's output: an empty runs folder whose NOT_RUN file says why.
        directory = RUNS_DIR / config.experiment
        if directory.exists():
            shutil.rmtree(directory)  # units of an earlier run with a checkpoint are not this run's
        directory.mkdir(parents=True)
        (directory / "NOT_RUN").write_text(config.not_run + "\n", encoding="utf-8")
        log.info("experiment %s: not run: %s", config.experiment, config.not_run)
        return 0
    device = env.device(args.device or config.env.device)
    if args.amp and device.type != "cuda":
        raise SdcaffError("--amp (bf16 autocast) is for CUDA devices; the CPU runs in float32")
    options = Options(device, args.amp, args.compile)
    split = read_split(split_path(config))
    units = plan(config, split)
    for flag, values, index in (("--seed", args.seed, 0), ("--fold", args.fold, 1)):
        if values:
            unknown = sorted(set(values) - {u[index] for u in units})
            if unknown:
                raise SdcaffError(f"{flag} {unknown}: not among experiment '{config.experiment}' units {units}")
            units = [u for u in units if u[index] in values]
    expected = unit_hash(unit_key(config, split), options)
    todo = [u for u in units if not is_done(unit_dir(config.experiment, *u), expected)]
    log.info("read %s (%d rows, %d folds, selection %s); %d of %d units to train (profile %s, device %s)",
             split.csv_path, len(split.rows), split.sidecar["folds"], split.sidecar["selection"], len(todo),
             len(units), config.profile, device)
    backend = cluster.choose_backend(args.backend, config.train.backend)
    if todo and backend == "slurm":
        results = cluster.train_on_slurm(config, split, todo, options, cluster.load_slurm_params())
    elif todo:
        results = train_units(config, split, todo, options)
    if todo:
        start = time.monotonic()
        bar = tqdm(results, total=len(todo), desc=f"train {config.experiment}", unit="unit", disable=None)
        for done, result in enumerate(bar, start=1):
            elapsed = time.monotonic() - start
            log.info("%s seed %d fold %d: epoch %d selected, test WA %.2f UA %.2f (%d utterances), %.0f s; "
                     "%d of %d units, ETA %.0f s", config.experiment, result["seed"], result["fold"],
                     result["selected_epoch"], result["test"]["wa"], result["test"]["ua"], result["test"]["n"],
                     result["seconds"], done, len(todo), elapsed / done * (len(todo) - done))
    log.info("wrote %d units under %s (%d were already done)", len(todo), RUNS_DIR / config.experiment,
             len(units) - len(todo))
    return 0
