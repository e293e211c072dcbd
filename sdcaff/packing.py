"""`sdcaff packing`: units per hour when k units share one device, measured with the real training path.

The slurm backend's `units_per_job: k` runs k units side by side in one task, one process each, on one
GPU. Whether that pays depends on the GPU and the model, so this verb measures it: for each k it trains
k units of one experiment at once (`train.jobs: k`, the code the slurm task runs) for a few epochs in a
scratch workspace under `artifacts/packing/`, and reports units per hour (scaled to the full schedule),
epoch seconds per unit and the speed-up over k = 1. It writes `<out_dir>/packing-<device>.json` and
`<tables_dir>/packing-<device>.md`. `make gpu-check` runs it at k = 1, 2, 4, 8; on a CPU it runs too
(the tests use it with a tiny model), but the figures that matter are a GPU's.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sdcaff import env, params, train
from sdcaff.errors import SdcaffError

log = logging.getLogger(__name__)

WORK_DIR = Path("artifacts/packing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="iemocap-loso", help="a primary experiment (default: %(default)s)")
    parser.add_argument("--profile", default=None, help="default: the profile in use (make gpu-check: paper)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="units sharing the device")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per unit while timing (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per unit (default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out-dir", default="results/bench", help="JSON goes here (default: %(default)s)")
    parser.add_argument("--tables-dir", default="results/tables", help="the Markdown table (default: %(default)s)")


def unit_grid(k: int, seeds: int, folds: int) -> tuple[int, int]:
    """Returns (seeds, folds per seed) whose product is k, as few seeds as possible."""
    for n_seeds in range(1, seeds + 1):
        if k % n_seeds == 0 and k // n_seeds <= folds:
            return n_seeds, k // n_seeds
    raise SdcaffError(f"k = {k} units cannot be laid out as seeds x folds with {seeds} seeds and {folds} folds")


def workspace(k: int, experiment: str, profile: str, epochs: int, threads: int, grid: tuple[int, int]) -> Path:
    """Returns a fresh scratch workspace for k units: links to the inputs, a params file that trains exactly them."""
    source = params.params_path().absolute()
    data, _ = params.read(source)
    data["profile"] = profile  # a file of its own: no profile.yaml beside it
    profile_train = data["profiles"][profile].setdefault("train", {})
    seeds = list(profile_train.get("seeds") or data["profiles"].get("paper", {}).get("train", {}).get("seeds"))
    profile_train.update(seeds=seeds[: grid[0]], epochs=epochs, jobs=k, backend="local")
    profile_train["lr_drop_epochs"] = [e for e in profile_train.get("lr_drop_epochs", []) if e < epochs]
    data["experiments"][experiment]["folds"] = list(range(grid[1]))
    data["env"] = {**data.get("env", {}), "threads": threads * k}
    directory = WORK_DIR.absolute() / f"k{k}"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "artifacts").mkdir(parents=True)
    for name in ("features", "splits"):
        (directory / "artifacts" / name).symlink_to(Path("artifacts", name).absolute())
    (directory / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return directory


def measure(k: int, args: argparse.Namespace, profile: str, schedule_epochs: int, grid: tuple[int, int]) -> dict:
    """Trains k units at once in a scratch workspace; returns the timings."""
    directory = workspace(k, args.experiment, profile, args.epochs, args.threads, grid)
    command = [sys.executable, "-m", "sdcaff.cli", "train", "--experiment", args.experiment, "--device", args.device]
    log.info("k = %d: %d seed(s) x %d fold(s) of %s, %d epochs each, in %s", k, *grid, args.experiment, args.epochs,
             directory)
    start = time.monotonic()
    out = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                         env={**os.environ, "SDCAFF_PARAMS": str(directory / "params.yaml")})
    wall = time.monotonic() - start
    (directory / "train.log").write_text(out.stdout + out.stderr, encoding="utf-8")
    if out.returncode != 0:
        raise SdcaffError(f"k = {k}: sdcaff train exited {out.returncode}; its log: {directory / 'train.log'}\n"
                          + out.stderr[-2000:])
    units = [json.loads(record.read_text(encoding="utf-8"))["epoch_seconds"]
             for record in sorted((directory / "artifacts/provenance/train" / args.experiment).glob("*.json"))]
    epochs = [s for unit in units for s in unit]
    if len(units) != k or len(epochs) != k * args.epochs:
        raise SdcaffError(f"k = {k}: expected {k} units of {args.epochs} timed epochs, found {len(units)} units and "
                          f"{len(epochs)} epochs in {directory}")
    epoch_s = sorted(epochs)[len(epochs) // 2]
    # A unit of the full schedule: the run's start-up (its wall time less the longest unit's epochs) plus
    # every epoch at the median time measured with k units side by side.
    startup = max(0.0, wall - max(sum(unit) for unit in units))
    unit_s = startup + epoch_s * schedule_epochs
    return {"k": k, "wall_s": round(wall, 3), "startup_s": round(startup, 3), "epoch_s_median": round(epoch_s, 4),
            "units_per_hour": round(k * 3600 / unit_s, 2), "timed_epochs": len(epochs)}


def run(args: argparse.Namespace) -> int:
    profile = args.profile or params.profile_name()
    config = train.load_config(args.experiment)
    if config.spec.group not in train.PRIMARY_GROUPS:
        raise SdcaffError(f"{args.experiment} is a secondary experiment; name a primary one (e.g. iemocap-loso)")
    data, _ = params.read(params.params_path())
    full = data["profiles"][profile].get("train", {})
    schedule_epochs = int(full.get("epochs") or data["profiles"]["paper"]["train"]["epochs"])
    split_file = train.split_path(config).with_suffix(".json")
    folds = int(json.loads(split_file.read_text(encoding="utf-8"))["folds"])
    seeds = len(full.get("seeds") or data["profiles"]["paper"]["train"]["seeds"])
    device = env.device(args.device)
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [measure(k, args, profile, schedule_epochs, unit_grid(k, seeds, folds)) for k in args.ks]
    base = rows[0]["units_per_hour"]
    for row in rows:
        row["speedup_vs_first"] = round(row["units_per_hour"] / base, 3)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    record = {"device": device.type, "gpu": name if device.type == "cuda" else None, "experiment": args.experiment,
              "profile": profile, "timed_epochs_per_unit": args.epochs, "schedule_epochs": schedule_epochs,
              "threads_per_unit": args.threads, "torch": str(torch.__version__), "rows": rows,
              "note": "units/hour of the full schedule = k * 3600 / (start-up + median epoch s x schedule epochs)"}
    out = Path(args.out_dir) / f"packing-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = [f"# Units per device: {name}, {profile} profile, {args.experiment}", "",
             f"k units at once, one process each; {args.epochs} timed epochs per unit, scaled to "
             f"{schedule_epochs}.", "", "| k | median epoch s | units/hour | vs k = %d |" % rows[0]["k"], "|---|---|---|---|"]
    table += [f"| {r['k']} | {r['epoch_s_median']:.3f} | {r['units_per_hour']:.1f} | {r['speedup_vs_first']:.2f}x |"
              for r in rows]
    md = Path(args.tables_dir) / f"packing-{slug}.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(table) + "\n", encoding="utf-8")
    for r in rows:
        log.info("k = %d: %.1f units/hour (%.2fx), median epoch %.3f s", r["k"], r["units_per_hour"],
                 r["speedup_vs_first"], r["epoch_s_median"])
    log.info("wrote %s and %s", out, md)
    return 0
