#!/usr/bin/env bash
# make gpu-check: everything a GPU can tell us, in one run of about 8 minutes on one H100/H200.
#   1. the synthetic default's inputs (IEMOCAP features, the LOSO split), as make repro makes them;
#   2. the GPU-marked tests (CUDA MFCC and model against the CPU, bf16/compile paths);
#   3. the timing suites with eager/compile x fp32/bf16 variants: the paper-profile train step's time
#      and peak memory per variant (results/bench/bench-pt<torch>-cuda.json, results/tables/bench.md);
#   4. units per GPU: k = 1, 2, 4, 8 paper-profile units side by side on the GPU, as slurm
#      units_per_job: k would run them (results/bench/packing-<gpu>.json, results/tables/packing-<gpu>.md).
# Run from the repository root; .venv is set up by the Makefile first. Exits non-zero without a GPU.
set -euo pipefail
BIN=.venv/bin
export PATH="$PWD/$BIN:$PATH"
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

"$BIN/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu-check: no CUDA device visible to torch")'
"$BIN/python" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "inputs: synthetic IEMOCAP features and splits (dvc repro)"
dvc repro features@iemocap splits@iemocap-loso resolve

step "GPU-marked tests"
"$BIN/python" -m pytest -q -m gpu tests -p no:cacheprovider

step "timing suites: eager/compile x fp32/bf16 (sdcaff bench --quick)"
sdcaff bench --quick

step "units per GPU: k = 1, 2, 4, 8 paper-profile units at once (sdcaff packing)"
sdcaff packing --profile paper --experiment iemocap-loso --ks 1 2 4 8 --epochs 2 --threads 2 --device cuda

step "done: commit results/bench/*.json and results/tables/{bench,packing-*}.md with the GPU's name"
ls -l results/bench results/tables | grep -E 'cuda|packing|bench' || true
