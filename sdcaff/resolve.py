"""Stage resolve: every experiment's settings, resolved -> artifacts/experiments/<exp>.json.

An experiment's settings come from several params blocks: its own entry, the profile's model, train and
baselines blocks, env, and profile.yaml. A DVC stage that listed those blocks as params would rerun
whenever any part of them changed, another model's sizes included. Instead, train@<exp> and
evaluate@<exp> depend on this stage's file for their experiment, which holds only what that experiment
resolves to: DVC compares its content, so a new model or a new experiment leaves every other stage
up to date, and any change that reaches an experiment's settings reruns exactly its stages.
"""

from __future__ import annotations

import argparse
import json
import logging

from sdcaff import params, train, units
from sdcaff.errors import ParamsError
from sdcaff.files import atomic_dir

log = logging.getLogger(__name__)

OUT_DIR = units.EXPERIMENTS_DIR  # sdcaff evaluate reads them back (units.read)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The verb takes no arguments: it resolves every experiment of params.yaml."""


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing one resolved-settings file per experiment (all of them, or none on error)."""
    data, _ = params.read(params.params_path())
    names = sorted(data.get("experiments") or {})
    if not names:
        raise ParamsError(f"{params.params_path()}: no experiments to resolve")
    configs = [train.load_config(name) for name in names]  # every one checked before anything is written
    with atomic_dir(OUT_DIR) as tmp:
        for config in configs:
            text = json.dumps(config.resolved().as_dict(), indent=2, sort_keys=True) + "\n"
            (tmp / units.resolved_path(config.experiment).name).write_text(text, encoding="utf-8")
        sources = json.dumps(units.params_sources(), indent=2, sort_keys=True) + "\n"
        (tmp / units.SOURCES_FILE).write_text(sources, encoding="utf-8")
    log.info("resolved %d experiments (profile %s) into %s", len(configs), configs[0].profile, OUT_DIR)
    return 0
