"""Stage bench: the timing suites in benchmarks/ -> results/bench/<name>.json, ratio tables and a study estimate.

The suites are pytest-benchmark files; this module runs them in a child pytest, names the result file
after torch and the device, and turns every results file it finds into results/tables/bench.md and .csv.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal, NamedTuple

from sdcaff import env
from sdcaff import params as params_module
from sdcaff.errors import ParamsError, SdcaffError
from sdcaff.files import atomic_path
from sdcaff.mfcc import HOP_LENGTH, SAMPLE_RATE
from sdcaff.train import TrainParams

log = logging.getLogger(__name__)

__all__ = ["BenchParams", "EAGER", "HOP_LENGTH", "SAMPLE_RATE", "SEED", "SHAPES", "SUITE_VARIANTS", "Variant",
           "load_params", "profile_train", "ratios", "result_name", "run", "study", "tables"]

SEED = 987654  # authors' seed; here it draws the synthetic inputs every suite times
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
# pytest exit codes: 0 all passed, 1 some cases failed (their errors are in the JSON); others = no run.
PYTEST_OK = (0, 1)


@dataclasses.dataclass(frozen=True)
class BenchParams:
    out_dir: str = "results/bench"  # writes <out_dir>/<name>.json, one per torch version and device
    tables_dir: str = "results/tables"  # writes bench.md and bench.csv from every file in out_dir
    profile: str = "paper"  # the model profile (params `profiles`) the kernels time
    batch_size: int | None = None  # null = the profile's train batch_size (paper: the authors' 32)
    clip_seconds: float = 6.0  # authors' code: 6 s clips -> 251 frames
    utterances: int = 16  # features race: this many clips of clip_seconds
    scaling_batches: tuple[int, ...] = (1, 4, 16)  # forward-pass batch sizes at clip_seconds
    scaling_seconds: tuple[float, ...] = (2.0, 4.0, 8.0)  # clip lengths at scaling_length_batch
    scaling_length_batch: int = 4
    compile_on_cpu: Literal["none", "light", "all"] = "light"  # light = Cross AFF only
    heavy_rounds: int = 3  # timed rounds of each heavy case, after one warm-up round
    quick_min_rounds: int = 3  # --quick: light kernels' pytest-benchmark min rounds
    quick_max_time_s: float = 0.2  # --quick: light kernels' pytest-benchmark max time per case
    quick_heavy_rounds: int = 1  # --quick: timed rounds of each heavy case
    study_folds: int = 5  # authors' protocol: 5 random folds
    study_utterances: int = 2948  # spec: the authors' folds hold 2,948 utterances (angry twice)
    study_feature_utterances: int = 5531  # feature set iemocap on the full release (neu, hap+exc, sad, ang)


class Variant(NamedTuple):
    """How a timed case runs: which implementation, eager or compiled, at which precision."""

    impl: str  # suite, or the peer it races: reference, librosa, torchaudio
    mode: str  # eager or compile (torch.compile)
    precision: str  # fp32, or bf16 (autocast)

    @property
    def id(self) -> str:
        """Returns the pytest id: eager-fp32, compile-bf16, ... for the suite; the peer's name otherwise."""
        return f"{self.mode}-{self.precision}" if self.impl == "suite" else self.impl


SUITE_VARIANTS = [Variant("suite", m, p) for p in ("fp32", "bf16") for m in ("eager", "compile")]
EAGER = Variant("suite", "eager", "fp32")


# --bench-shapes: `paper` is params.yaml as written; `small` shrinks everything so tests finish in seconds.
SHAPES: dict[str, dict] = {
    "paper": {},
    "small": {"profile": "quick", "batch_size": 2, "clip_seconds": 1.0, "utterances": 2, "scaling_batches": (1, 2),
              "scaling_seconds": (0.5, 1.0), "scaling_length_batch": 1, "compile_on_cpu": "none"},
}


def load_params(shapes: str = "paper", path: str | os.PathLike | None = None) -> BenchParams:
    """Returns params.yaml's `bench` section with the `shapes` preset applied; raises ParamsError naming file:line."""
    path = Path(path) if path is not None else params_module.params_path()
    p = dataclasses.replace(params_module.load("bench", BenchParams, path), **SHAPES[shapes])
    positive = ("clip_seconds", "utterances", "scaling_length_batch", "heavy_rounds", "quick_min_rounds",
                "quick_max_time_s", "quick_heavy_rounds")
    problems = [f"'{k}' must be positive, got {getattr(p, k)}" for k in positive if getattr(p, k) <= 0]
    if p.batch_size is not None and p.batch_size <= 0:
        problems.append(f"'batch_size' must be positive or null, got {p.batch_size}")
    for key in ("scaling_batches", "scaling_seconds"):
        values = getattr(p, key)
        if not values or min(values) <= 0:
            problems.append(f"'{key}' needs at least one value, all positive, got {list(values)}")
    if p.study_folds < 2 or p.study_utterances < p.study_folds:
        problems.append(f"'study_folds' ({p.study_folds}) must be at least 2 and at most study_utterances")
    if problems:
        _, lines = params_module.read(path)
        raise ParamsError(f"{path}:{lines.get(('bench',), 1)}: bench: " + "; ".join(problems))
    return p


def profile_train(profile: str, path: str | os.PathLike | None = None) -> TrainParams:
    """Returns the profile's training settings (params `profiles.<profile>.train` over the authors' defaults)."""
    path = Path(path) if path is not None else params_module.params_path()
    data, lines = params_module.read(path)
    profiles = data.get("profiles") or {}
    if profile not in profiles:
        raise ParamsError(f"{path}:{lines.get(('bench', 'profile'), 1)}: bench.profile '{profile}' is not among "
                          f"the profiles: {', '.join(sorted(profiles))}")
    block = profiles[profile].get("train") or {}
    return params_module.build(TrainParams, block, path, lines, ("profiles", profile, "train"))


# ---------------------------------------------------------------------------------------------------
# Naming: bench-pt<torch>-<cpu|cu<cuda>>-<device slug>.json, as timm names its results by torch, CUDA, device.


def slug(text: str) -> str:
    """Returns a device name as lowercase words joined by '-', marketing marks and clock speed dropped."""
    text = re.sub(r"\((r|tm)\)|@.*$|\bcpu\b|\bprocessor\b|\b\d+-core\b", " ", text.lower())
    return "-".join(re.findall(r"[a-z0-9.]+", text)).replace(".", "-") or "unknown"


def cpu_model() -> str:
    """Returns the CPU's marketing name (Linux /proc/cpuinfo), else the platform's processor or machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_driver() -> str | None:
    """Returns the NVIDIA driver version from nvidia-smi, or None where it cannot be asked."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def hardware_names(device_type: str) -> dict[str, str | None]:
    """Returns cpu_model, and gpu_driver on CUDA: what the device slug and the machine record need."""
    return {"cpu_model": cpu_model(), "gpu_driver": gpu_driver() if device_type == "cuda" else None}


def result_name(record: dict, shapes: str = "paper") -> str:
    """Returns e.g. bench-pt2.14.1-cpu-amd-epyc or bench-pt2.14.1-cu130-nvidia-h100-80gb-hbm3; `-small` if not paper shapes."""
    torch_version = str(record["torch"]).split("+")[0]
    if record["device"] == "cuda":
        cuda = "cu" + str(record.get("cuda") or "").replace(".", "")
        name = f"bench-pt{torch_version}-{cuda}-{slug(record['gpu'] or 'gpu')}"
    else:
        name = f"bench-pt{torch_version}-cpu-{slug(record.get('cpu_model') or 'cpu')}"
    # Non-paper shapes get their own file, so a test-sized run never replaces a real measurement.
    return name if shapes == "paper" else f"{name}-{shapes}"


# ---------------------------------------------------------------------------------------------------
# Tables: ratios between variants of one kernel, and the paper-profile study estimated from the times.

# Peers the suite's eager fp32 path is raced against (benchmarks/reference.py).
PEERS = ("reference", "librosa", "torchaudio")


def entries(data: dict) -> list[dict]:
    """Returns one flat row per benchmark of a pytest-benchmark JSON: names, extra_info, median seconds, rounds."""
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "kernel" not in info:
            continue
        rows.append({**info, "name": b["name"], "group": b.get("group"), "median_s": b["stats"]["median"],
                     "rounds": b["stats"]["rounds"]})
    return rows


def _shape(row: dict) -> tuple:
    """Returns what makes two rows the same case but for the variant: kernel, batch, seconds, utterances."""
    return tuple(row.get(k) for k in ("kernel", "batch", "seconds", "utterances"))


def ratios(rows: list[dict]) -> list[dict]:
    """Returns one speedup (baseline median / candidate median; > 1 = candidate faster) per comparable pair."""
    index = {(_shape(r), r["impl"], r["mode"], r["precision"]): r for r in rows}
    pairs = []
    for shape in sorted({_shape(r) for r in rows}, key=lambda s: tuple(str(v) for v in s)):
        def get(impl, mode="eager", precision="fp32"):
            return index.get((shape, impl, mode, precision))

        suite = get("suite")
        for peer in PEERS:
            pairs.append((f"suite vs {peer}", get(peer), suite))
        for precision in ("fp32", "bf16"):
            pairs.append((f"compile vs eager ({precision})", get("suite", "eager", precision),
                          get("suite", "compile", precision)))
        for mode in ("eager", "compile"):
            pairs.append((f"bf16 vs fp32 ({mode})", get("suite", mode, "fp32"), get("suite", mode, "bf16")))
        pairs.append(("compile+bf16 vs eager fp32", suite, get("suite", "compile", "bf16")))
    out = []
    for comparison, baseline, candidate in pairs:
        if baseline is None or candidate is None:
            continue
        out.append({
            "comparison": comparison, "kernel": baseline["kernel"], "shape": _shape_text(baseline),
            "baseline": _variant_text(baseline), "baseline_s": baseline["median_s"],
            "candidate": _variant_text(candidate), "candidate_s": candidate["median_s"],
            "speedup": baseline["median_s"] / candidate["median_s"],
        })
    return out


def _variant_text(row: dict) -> str:
    """Returns 'eager fp32', 'compile bf16', ... for the suite, the peer's name otherwise."""
    return row["impl"] if row["impl"] != "suite" else f"{row['mode']} {row['precision']}"


def _shape_text(row: dict) -> str:
    """Returns the row's shape as text, e.g. 'batch 32' or '16 utt, 6 s'."""
    parts = []
    if row.get("batch") is not None:
        parts.append(f"batch {row['batch']}")
    if row.get("utterances") is not None:
        parts.append(f"{row['utterances']} utt")
    if row.get("seconds") is not None:
        parts.append(f"{row['seconds']:g} s")
    return ", ".join(parts)


def study(rows: list[dict], p: BenchParams, epochs: int) -> list[dict]:
    """Returns the study's estimated hours per measured variant (folds x epochs), from train-step and forward times."""
    per_fold_test = math.ceil(p.study_utterances / p.study_folds)  # one fold tests, the others train
    per_fold_train = p.study_utterances - per_fold_test
    forward = {(r["mode"], r["precision"]): r for r in rows if r["kernel"] == "model-forward" and r["impl"] == "suite"}
    out = []
    for step in (r for r in rows if r["kernel"] == "train-step" and r["impl"] == "suite"):
        fwd = forward.get((step["mode"], step["precision"]))
        if fwd is None or fwd.get("batch") != step.get("batch"):
            continue
        batch = step["batch"]
        steps, test_batches = math.ceil(per_fold_train / batch), math.ceil(per_fold_test / batch)
        # authors' protocol: every epoch trains on the train folds, then runs the test fold once.
        seconds = p.study_folds * epochs * (steps * step["median_s"] + test_batches * fwd["median_s"])
        out.append({
            "variant": _variant_text(step), "batch": batch, "train_utterances": per_fold_train,
            "test_utterances": per_fold_test, "steps_per_epoch": steps, "step_s": step["median_s"],
            "test_batches_per_epoch": test_batches, "forward_s": fwd["median_s"],
            "folds": p.study_folds, "epochs": epochs, "hours": seconds / 3600,
        })
    features = next((r for r in rows if r["kernel"] == "features-pipeline" and r["impl"] == "suite"), None)
    if features is not None:
        per_utterance = features["median_s"] / features["utterances"]
        out.append({
            "variant": "features (suite pipeline, once)", "batch": features["utterances"],
            "train_utterances": p.study_feature_utterances, "step_s": per_utterance,
            "hours": per_utterance * p.study_feature_utterances / 3600,
        })
    return out


def tables(results: dict[str, dict], p: BenchParams, epochs: int) -> tuple[str, list[dict]]:
    """Returns bench.md's text and bench.csv's rows for the results files (name -> JSON)."""
    md = [
        "# Timing benchmarks",
        "",
        "Written by `sdcaff bench` from `results/bench/*.json` (pytest-benchmark files; "
        "`pytest-benchmark compare` reads them). Times are medians of the timed rounds, in seconds. "
        "speedup = baseline / candidate: above 1 the candidate is faster.",
    ]
    csv_rows: list[dict] = []
    for name, data in results.items():
        rows = entries(data)
        machine = data.get("machine_info", {}).get("sdcaff", {})
        extra = data.get("sdcaff", {})
        md += ["", f"## {name}", "", _machine_text(machine), "", "### Ratios", "",
               "| comparison | kernel | shape | baseline | candidate | baseline s | candidate s | speedup |",
               "|---|---|---|---|---|---:|---:|---:|"]
        for r in ratios(rows):
            md.append(f"| {r['comparison']} | {r['kernel']} | {r['shape']} | {r['baseline']} | {r['candidate']} | "
                      f"{r['baseline_s']:.4g} | {r['candidate_s']:.4g} | {r['speedup']:.2f} |")
            csv_rows.append({"device": name, "section": "ratio", "item": f"{r['comparison']}: {r['kernel']}",
                             "shape": r["shape"], "baseline": r["baseline"], "baseline_s": r["baseline_s"],
                             "candidate": r["candidate"], "candidate_s": r["candidate_s"],
                             "value": r["speedup"], "unit": "x"})
        estimate = study(rows, p, epochs)
        md += ["", f"### The {p.profile}-profile study, estimated ({p.study_folds} folds x {epochs} epochs, "
               f"{p.study_utterances} utterances)", "",
               "| variant | batch | train utt / fold | steps / epoch | step s | test batches / epoch | forward s | "
               "hours |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in estimate:
            md.append(f"| {s['variant']} | {s['batch']} | {s['train_utterances']} | {s.get('steps_per_epoch', '')} | "
                      f"{s['step_s']:.4g} | {s.get('test_batches_per_epoch', '')} | "
                      f"{_fmt(s.get('forward_s'))} | {s['hours']:.2f} |")
            csv_rows.append({"device": name, "section": "study", "item": s["variant"], "shape": f"batch {s['batch']}",
                             "baseline": "", "baseline_s": "", "candidate": "", "candidate_s": s["step_s"],
                             "value": s["hours"], "unit": "h"})
        md += ["", "### Measured", "", "| group | name | median s | rounds | realtime x | peak MiB | compile s |",
               "|---|---|---:|---:|---:|---:|---:|"]
        for r in sorted(rows, key=lambda r: (r["group"] or "", r["name"])):
            md.append(f"| {r['group']} | {r['name']} | {r['median_s']:.4g} | {r['rounds']} | "
                      f"{_fmt(r.get('times_realtime'))} | {_fmt(r.get('peak_mib'))} | {_fmt(r.get('compile_s'))} |")
        for title, key, field in (("Skipped", "skipped", "reason"), ("Errors", "errors", "error")):
            if extra.get(key):
                md += ["", f"### {title}", "", f"| case | {field} |", "|---|---|"]
                md += [f"| {e['name']} | {e[field]} |" for e in extra[key]]
    return "\n".join(md) + "\n", csv_rows


def _fmt(value) -> str:
    """Returns 4 significant digits, or '' for a missing value."""
    return "" if value is None else f"{value:.4g}"


def _machine_text(m: dict) -> str:
    """Returns one sentence describing the machine and run settings of a results file."""
    device = f"GPU {m.get('gpu')} (driver {m.get('gpu_driver')})" if m.get("device") == "cuda" else \
        f"CPU {m.get('cpu_model')}"
    load = m.get("load_average") or {}
    return (f"{device}, {m.get('threads')} threads; torch {m.get('torch')}, CUDA {m.get('cuda')}, cuDNN "
            f"{m.get('cudnn')}; commit {m.get('commit')}; 1-min load average {load.get('start')} at start, "
            f"{load.get('end')} at end; shapes {m.get('shapes')}, profile {m.get('profile')}, "
            f"{'quick' if m.get('quick') else 'full'} rounds (heavy cases {m.get('heavy_rounds')}); timer {m.get('timer')}.")


CSV_COLUMNS = ("device", "section", "item", "shape", "baseline", "baseline_s", "candidate", "candidate_s", "value",
               "unit")


def read_results(out_dir: Path) -> dict[str, dict]:
    """Returns every results file in out_dir by name (sorted); raises SdcaffError naming a file that is not JSON."""
    results = {}
    for path in sorted(out_dir.glob("bench-*.json")):
        try:
            results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SdcaffError(f"{path}: not a readable pytest-benchmark JSON: {exc}") from exc
    return results


# ---------------------------------------------------------------------------------------------------
# The stage.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --quick and --shapes to the verb's parser."""
    parser.add_argument("--quick", action="store_true",
                        help="short rounds (bench.quick_*): the DVC stage, ~3 minutes on 2 CPU cores")
    parser.add_argument("--shapes", choices=tuple(SHAPES), default="paper",
                        help="paper: params bench as written; small: tiny shapes (tests); its file is named -small")
    parser.add_argument("--select", metavar="EXPR", default=None,
                        help="pytest -k expression: time only the matching cases (the results file holds only those)")


def suite_command(json_path: Path, shapes: str, quick: bool, p: BenchParams, select: str | None = None) -> list[str]:
    """Returns the pytest command line that runs the suites and writes pytest-benchmark JSON to json_path."""
    cmd = [sys.executable, "-m", "pytest", str(BENCHMARKS_DIR), "-q", "-rs",
           f"--benchmark-json={json_path}", f"--bench-shapes={shapes}"]
    if select:
        cmd += ["-k", select]
    if quick:
        cmd += ["--bench-quick", f"--benchmark-min-rounds={p.quick_min_rounds}",
                f"--benchmark-max-time={p.quick_max_time_s}"]
    return cmd


def run(args: argparse.Namespace) -> int:
    """Returns 0 after timing the suites into <out_dir>/<name>.json and writing the tables from every results file."""
    import torch

    params_path = params_module.params_path().resolve()
    p = load_params(args.shapes, params_path)
    env_params = params_module.load("env", env.EnvParams, params_path)
    device = env.device(env_params.device)
    record = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device.type,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              **hardware_names(device.type)}
    name = result_name(record, args.shapes)
    if not BENCHMARKS_DIR.is_dir():
        raise SdcaffError(f"{BENCHMARKS_DIR}: the benchmark suites are missing (run from a source checkout)")
    json_path = Path(p.out_dir) / f"{name}.json"
    log.info("read %s and %s: timing the suites on %s (%s shapes, %s rounds)", params_path, BENCHMARKS_DIR,
             device, args.shapes, "quick" if args.quick else "full")

    child_env = {**os.environ, "SDCAFF_PARAMS": str(params_path)}
    with atomic_path(json_path) as tmp:
        cmd = suite_command(tmp, args.shapes, args.quick, p, args.select)
        log.debug("running %s", " ".join(cmd))
        # The child's pytest output goes to stderr: stdout is for machine-readable results only.
        done = subprocess.run(cmd, env=child_env, stdout=sys.stderr, check=False)
        if done.returncode not in PYTEST_OK or tmp.stat().st_size == 0:
            raise SdcaffError(f"{BENCHMARKS_DIR}: pytest exited with code {done.returncode} and wrote no results")
        data = json.loads(tmp.read_text(encoding="utf-8"))
    errors = data.get("sdcaff", {}).get("errors", [])
    for e in errors:
        log.warning("%s failed (%s): %s", e["name"], e["phase"], e["error"])

    results = read_results(Path(p.out_dir))
    markdown, csv_rows = tables(results, p, profile_train(p.profile, params_path).epochs)
    tables_dir = Path(p.tables_dir)
    with atomic_path(tables_dir / "bench.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    with atomic_path(tables_dir / "bench.csv") as tmp:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows)
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    skipped = data.get("sdcaff", {}).get("skipped", [])
    log.info("wrote %s (%d cases timed, %d skipped, %d failed) and %s/bench.md, bench.csv (%d rows from %d results "
             "files)", json_path, len(data.get("benchmarks", [])), len(skipped), len(errors), tables_dir,
             len(csv_rows), len(results))
    return 0
