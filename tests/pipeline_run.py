"""The reduced but real pipeline CI runs: every stage's own code on a small synthetic IEMOCAP.

`python -m tests.pipeline_run --keep DIR` under each CPU kind, then `--record --kinds DIR...` re-runs it
and rewrites tests/expected/pipeline.json with each metric's tolerance taken from those runs (commit it
with the change that moved the numbers; docs/regression.md has the commands). tests/test_pipeline.py
runs it and checks against that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import tempfile
from pathlib import Path

import yaml

from sdcaff import cli

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / "tests" / "expected" / "pipeline.json"
EXPERIMENTS = ("iemocap-authors", "iemocap-loso")  # both protocols, the paper's headline corpus
# Sessions 1 and 5 (LOSO folds 0 and 4). Measured on all 5 folds at the settings below (commit 317f91e):
# UA authors 70.7 66.9 65.1 79.4 73.9, LOSO 77.0 51.5 49.5 47.6 77.6. LOSO tests on sessions 2-4 sat
# near 50, twice chance, where the guard's learning assertion would be a coin toss; 1 and 5 were far above.
FOLDS = (0, 4)
SEED = 987654  # the authors' seed; the committed expectations were recorded with it
THREADS = 2  # params.yaml env.threads; CPU sums are bitwise repeatable only at one thread count
# Each metric's tolerance: params check.spread_factor (1.5) x the largest difference measured between
# this run and runs under other CPU kinds and thread counts (docs/regression.md), never below this floor.
TOLERANCE_FLOOR = 1.0  # percentage points


def reduced_params(seed: int = SEED, threads: int = THREADS) -> dict:
    """Returns the repository's params.yaml cut down: small corpus, 2 folds, 20 epochs, one seed."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["env"]["threads"] = threads
    # ~1,000 wavs, ~340 in the authors' 4-class subset. At 0.06 (~190) the same schedule reached UA 61.5
    # (authors) and 61.8 (LOSO) on folds 0 and 4, with LOSO fold 4 at 48: too few rows to learn a session.
    p["synth"]["iemocap_scale"] = 0.10
    p["splits"]["protocols"] = {k: v for k, v in p["splits"]["protocols"].items() if k in EXPERIMENTS}
    p["feature_sets"] = {"iemocap": p["feature_sets"]["iemocap"]}
    # Two folds of each protocol: every code path of the full study, a fifth of its training time.
    p["experiments"] = {k: {**v, "folds": list(FOLDS)} for k, v in p["experiments"].items() if k in EXPERIMENTS}
    p["profile"] = "quick"
    train = p["profiles"]["quick"]["train"]
    # The quick profile's lr (5e-3) for 12 epochs, then 4 at lr/10 and 4 at lr/100. At 6 epochs the loss
    # was still falling and UA sat at 25-34 (chance 25); at 20 UA fold mean is 74 (authors) and 65 (LOSO)
    # here and at least 67 and 58 under every emulated CPU kind (docs/regression.md), in ~1.5 min alone.
    train.update(epochs=20, lr_drop_epochs=[13, 17], seeds=[seed], jobs=1)
    return p


def run(workdir: Path, seed: int = SEED, threads: int = THREADS) -> Path:
    """Runs synth -> ... -> evaluate in `workdir` on a read-only corpus; returns the metrics dir."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(reduced_params(seed, threads), sort_keys=False))
    os.chdir(workdir)
    corpus = workdir / "corpus with spaces é" / "IEMOCAP_full_release"
    steps = [["synth", "--corpus", "iemocap", "--out", str(corpus)]]
    for argv in steps:
        _call(argv)
    _read_only(corpus)
    os.environ["SDCAFF_IEMOCAP"] = str(corpus)  # the licensed-copy path: env var, read-only tree
    try:
        for argv in (
            ["fingerprint", "--corpus", "iemocap"],
            ["manifest", "--corpus", "iemocap"],
            ["splits"],
            ["features", "--set", "iemocap", "--device", "cpu"],
            ["resolve"],
            *[[verb, "--experiment", exp] for exp in EXPERIMENTS for verb in ("train", "evaluate")],
        ):
            _call(argv)
    finally:
        del os.environ["SDCAFF_IEMOCAP"]
    return workdir / "results" / "metrics"


def _call(argv: list[str]) -> None:
    code = cli.main(argv)
    if code != 0:
        raise RuntimeError(f"sdcaff {' '.join(argv)} exited {code}")


def _read_only(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    root.chmod(root.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(root: Path) -> None:
    """Undoes _read_only so a temporary tree can be deleted."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help=f"rewrite {EXPECTED.relative_to(REPO)}")
    # The tolerance study (docs/regression.md) reruns at other seeds and thread counts and keeps the outputs.
    parser.add_argument("--seed", type=int, default=SEED, help="training seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=THREADS, help="env.threads (default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="copy results/ (metrics, predictions) into this directory")
    parser.add_argument("--kinds", type=Path, nargs="+", metavar="DIR",
                        help="with --record: --keep directories of runs under other CPU kinds (tolerances)")
    args = parser.parse_args()
    if args.record and (args.seed, args.threads) != (SEED, THREADS):
        parser.error("--record only at the default seed and thread count")
    if args.record and not args.kinds:
        parser.error("--record needs --kinds: each tolerance comes from runs under other CPU kinds")
    tmp = Path(tempfile.mkdtemp(prefix="sdcaff-pipeline-"))
    try:
        metrics_dir = run(tmp, args.seed, args.threads)
        if args.keep:
            shutil.copytree(tmp / "results", args.keep, dirs_exist_ok=True)
        verb = []
        if args.record:
            verb = ["--record", "--tolerance", str(TOLERANCE_FLOOR)]
            verb += [arg for kind in args.kinds for arg in ("--spread", str((kind / "metrics").resolve()))]
        return cli.main(["check", "--expected", str(EXPECTED), "--metrics-dir", str(metrics_dir), *verb])
    finally:
        os.chdir(REPO)
        make_writable(tmp)
        shutil.rmtree(tmp)


if __name__ == "__main__":
    raise SystemExit(main())
