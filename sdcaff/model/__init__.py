"""SD-CAFF and its ablations: build(ModelParams) -> nn.Module, forward -> ModelOutput; profiles from params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

from sdcaff import params
from sdcaff.errors import ParamsError
from sdcaff.model.sdcaff import ModelOutput, ModelParams, build

__all__ = ["ModelOutput", "ModelParams", "build", "load_params"]


def load_params(profile: str | None = None, path: str | os.PathLike | None = None) -> tuple[str, ModelParams]:
    """Returns (profile name, ModelParams) from params.yaml `profiles.<profile>.model`; default `profile`."""
    path = Path(path) if path is not None else params.params_path()
    data, lines = params.read(path)
    where = f"{path}:{lines.get(('profile',), 1)}"
    if profile is None:
        profile = data.get("profile")
        if not isinstance(profile, str):
            raise ParamsError(f"{where}: 'profile' must name one of the profiles, got {profile!r}")
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        raise ParamsError(f"{path}: missing section 'profiles'")
    if profile not in profiles:
        raise ParamsError(f"{where}: unknown profile '{profile}'; known: {', '.join(sorted(profiles))}")
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
