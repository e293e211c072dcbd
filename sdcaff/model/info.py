"""Verb model-info: a profile's parameter counts and branch shapes, as JSON on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import torch

from sdcaff import env, params
from sdcaff.losses import LossParams, MultiTaskLoss
from sdcaff.model import load_params
from sdcaff.model.sdcaff import ModelParams, build, component_parameters, count_parameters

log = logging.getLogger(__name__)

SEED = 0  # counts and shapes do not depend on it; fixed so that two runs do the same work


def describe(profile: str, p: ModelParams) -> dict[str, Any]:
    """Returns the profile's trainable counts (model, per component, centers) and branch shapes."""
    env.seed_everything(SEED)
    model = build(p).eval()
    # The centers the authors' loss attaches to this model: emotion always, gender with its head.
    loss = MultiTaskLoss(LossParams() if p.gender_head else LossParams(gender_weight=0.0), p.n_classes)
    static = torch.zeros(1, 1, p.n_mfcc, p.frames)
    dynamic = torch.zeros(1, p.frames, 3 * p.n_mfcc)
    with torch.no_grad():
        static_map, dynamic_map = model.branch_maps(static, dynamic)
        out = model(static, dynamic)
    return {
        "profile": profile,
        "params": count_parameters(model),
        "center_params": count_parameters(loss),
        "components": component_parameters(model),
        "static_in": list(static.shape[1:]),
        "dynamic_in": list(dynamic.shape[1:]),
        "static_out": list(static_map.shape[1:]) if static_map is not None else None,
        "dynamic_out": list(dynamic_map.shape[1:]) if dynamic_map is not None else None,
        "fused": out.fused.shape[1],
        "model": params.to_dict(p),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="profile under params.yaml `profiles` (default: params `profile`)")


def run(args: argparse.Namespace) -> int:
    profile, p = load_params(args.profile)
    log.info("read profile '%s' (fusion %s, branches %s) from %s", profile, p.fusion, p.branches, params.params_path())
    info = describe(profile, p)
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")
    log.info(
        "wrote model info for '%s' to stdout: %s trainable parameters + %s center coordinates, fused width %d",
        profile, f"{info['params']:,}", info["center_params"], info["fused"],
    )
    return 0
