"""SD-CAFF and its ablations: build(ModelParams) -> nn.Module, forward -> ModelOutput; profiles from params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

from sdcaff import params
from sdcaff.errors import ParamsError
from sdcaff.model.sdcaff import ModelOutput, ModelParams, build

__all__ = ["ModelOutput", "ModelParams", "Params", "build", "load_params"]

Params = ModelParams  # the model-module contract (sdcaff/train.py model_entry): `Params` and `build`


def load_params(profile: str | None = None, path: str | os.PathLike | None = None) -> tuple[str, ModelParams]:
    """Returns (profile name, ModelParams) from params.yaml `profiles.<profile>.model`; default: the profile in use."""
    path = Path(path) if path is not None else params.params_path()
    data, lines = params.read(path)
    if profile is None:
        profile = params.profile_name(path)  # profile.yaml beside params.yaml, else params.yaml's `profile`
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        raise ParamsError(f"{path}: missing section 'profiles'")
    if profile not in profiles:
        raise ParamsError(f"{path}: unknown profile '{profile}'; known: {', '.join(sorted(profiles))}")
    section = profiles[profile]
    keypath = ("profiles", profile)
    if not isinstance(section, dict) or "model" not in section:
        raise ParamsError(f"{path}:{lines[keypath]}: profile '{profile}' lacks a 'model' block")
    model_params = params.build(ModelParams, section["model"], path, lines, keypath + ("model",))
    problems = model_params.problems()
    if problems:
        line = lines[keypath + ("model",)]
        raise ParamsError(f"{path}:{line}: profiles.{profile}.model: " + "; ".join(problems))
    return profile, model_params
