"""Stage bench: naming, params, ratio and study tables from a synthetic JSON, the peers' equivalence, the suites and
the stage on CPU at small shapes, and pytest-benchmark compare on the saved file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sdcaff import bench, cli, mfcc, silence
from sdcaff.errors import ParamsError
from sdcaff.model.fusion import CrossAFF

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import reference  # noqa: E402  (benchmarks/reference.py: the peers the suites race)


def write_params(directory: Path, **bench_overrides) -> Path:
    """Writes the repository's params.yaml with results under `directory`, CPU, and bench overrides; returns its path."""
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    data["env"]["device"] = "cpu"
    data["bench"].update({"out_dir": str(directory / "bench"), "tables_dir": str(directory / "tables"),
                          "quick_min_rounds": 1, "quick_max_time_s": 0.001, **bench_overrides})
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# Naming ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("record, shapes, expected", [
    ({"torch": "2.14.1+cu130", "device": "cpu", "cpu_model": "AMD EPYC"}, "paper", "bench-pt2.14.1-cpu-amd-epyc"),
    ({"torch": "2.14.1", "device": "cpu", "cpu_model": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"}, "paper",
     "bench-pt2.14.1-cpu-intel-xeon-platinum-8375c"),
    ({"torch": "2.14.1", "device": "cpu", "cpu_model": "AMD Ryzen 9 7950X 16-Core Processor"}, "small",
     "bench-pt2.14.1-cpu-amd-ryzen-9-7950x-small"),
    ({"torch": "2.14.1+cu130", "device": "cuda", "cuda": "13.0", "gpu": "NVIDIA H100 80GB HBM3"}, "paper",
     "bench-pt2.14.1-cu130-nvidia-h100-80gb-hbm3"),
    ({"torch": "2.14.1+cu126", "device": "cuda", "cuda": "12.6", "gpu": "NVIDIA GeForce RTX 4090"}, "paper",
     "bench-pt2.14.1-cu126-nvidia-geforce-rtx-4090"),
])
def test_result_names(record, shapes, expected):
    assert bench.result_name(record, shapes) == expected


# Params ------------------------------------------------------------------------------------------


def test_small_preset_and_profile_train(tmp_path):
    path = write_params(tmp_path)
    paper, small = bench.load_params("paper", path), bench.load_params("small", path)
    assert paper.profile == "paper" and paper.batch_size is None and paper.clip_seconds == 6.0
    assert small.profile == "quick" and small.batch_size == 2 and small.compile_on_cpu == "none"
    train = bench.profile_train("paper", path)
    assert (train.batch_size, train.epochs, train.lr) == (32, 30, 5.0e-4)


def test_bad_bench_params_name_the_file_and_line(tmp_path):
    path = write_params(tmp_path, heavy_rounds=0)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("bench:"))
    with pytest.raises(ParamsError, match=rf"{path}:{line}: bench: 'heavy_rounds' must be positive"):
        bench.load_params("paper", path)
    with pytest.raises(ParamsError, match="not among the profiles"):
        bench.profile_train("nope", path)


# Tables from a synthetic pytest-benchmark JSON ---------------------------------------------------


def case(kernel, impl, mode, precision, median, **info):
    """Returns one benchmark entry as pytest-benchmark writes it (only the fields the tables read)."""
    name = f"test_{kernel}[{impl}-{mode}-{precision}]"
    return {"name": name, "group": kernel, "stats": {"median": median, "rounds": 3},
            "extra_info": {"kernel": kernel, "impl": impl, "mode": mode, "precision": precision, **info}}


SYNTHETIC = {
    "machine_info": {"sdcaff": {"device": "cuda", "gpu": "Test GPU", "torch": "2.14.1", "shapes": "paper"}},
    "benchmarks": [
        case("train-step", "suite", "eager", "fp32", 2.0, batch=32),
        case("train-step", "suite", "compile", "bf16", 0.5, batch=32),
        case("model-forward", "suite", "eager", "fp32", 0.5, batch=32),
        case("model-forward", "suite", "eager", "bf16", 0.4, batch=32),
        case("model-forward", "suite", "compile", "bf16", 0.25, batch=32),
        case("cross_aff-forward", "suite", "eager", "fp32", 0.001, batch=32),
        case("cross_aff-forward", "reference", "eager", "fp32", 0.003, batch=32),
        case("features-dsp", "suite", "eager", "fp32", 0.1, utterances=16, seconds=6.0),
        case("features-dsp", "librosa", "eager", "fp32", 1.0, utterances=16, seconds=6.0),
        case("features-dsp", "torchaudio", "eager", "fp32", 0.4, utterances=16, seconds=6.0),
        case("features-pipeline", "suite", "eager", "fp32", 0.2, utterances=16, seconds=6.0),
        case("scaling-forward", "suite", "eager", "fp32", 0.1, batch=4, seconds=2.0),
        case("scaling-forward", "suite", "eager", "fp32", 0.2, batch=4, seconds=4.0),
    ],
    "sdcaff": {"skipped": [{"name": "test_x[compile-fp32]", "reason": "because"}], "errors": []},
}


def test_ratios_pair_variants_of_one_kernel_and_shape():
    found = {(r["comparison"], r["kernel"]): r["speedup"] for r in bench.ratios(bench.entries(SYNTHETIC))}
    assert found == pytest.approx({
        ("compile+bf16 vs eager fp32", "train-step"): 4.0,
        ("bf16 vs fp32 (eager)", "model-forward"): 1.25,
        ("compile vs eager (bf16)", "model-forward"): 1.6,
        ("compile+bf16 vs eager fp32", "model-forward"): 2.0,
        ("suite vs reference", "cross_aff-forward"): 3.0,
        ("suite vs librosa", "features-dsp"): 10.0,
        ("suite vs torchaudio", "features-dsp"): 4.0,
    })


def test_study_extrapolates_folds_epochs_steps_and_test_passes():
    p = bench.BenchParams()
    rows = {r["variant"]: r for r in bench.study(bench.entries(SYNTHETIC), p, epochs=30)}
    eager = rows["eager fp32"]
    # 2,948 utterances: a test fold of 590 and 2,358 to train -> 74 steps and 19 test batches of 32 per epoch.
    assert (eager["train_utterances"], eager["test_utterances"]) == (2358, 590)
    assert (eager["steps_per_epoch"], eager["test_batches_per_epoch"]) == (74, 19)
    assert eager["hours"] == pytest.approx(5 * 30 * (74 * 2.0 + 19 * 0.5) / 3600)
    assert rows["compile bf16"]["hours"] == pytest.approx(5 * 30 * (74 * 0.5 + 19 * 0.25) / 3600)
    assert rows["features (suite pipeline, once)"]["hours"] == pytest.approx(0.2 / 16 * 5531 / 3600)


def test_tables_render_every_section():
    markdown, rows = bench.tables({"bench-pt2.14.1-cu130-test-gpu": SYNTHETIC}, bench.BenchParams(), epochs=30)
    assert "## bench-pt2.14.1-cu130-test-gpu" in markdown and "GPU Test GPU" in markdown
    assert "| suite vs librosa | features-dsp | 16 utt, 6 s | librosa | eager fp32 | 1 | 0.1 | 10.00 |" in markdown
    assert "| test_x[compile-fp32] | because |" in markdown
    assert {r["section"] for r in rows} == {"ratio", "study"}
    assert all(set(r) == set(bench.CSV_COLUMNS) for r in rows)


# The peers compute what the suite computes --------------------------------------------------------


def test_reference_cross_aff_matches_the_module():
    torch.manual_seed(0)
    module = CrossAFF(16, 8, 4)
    static, dynamic = torch.randn(3, 16, 5, 7), torch.randn(3, 8, 1, 20)
    weights = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    for training in (True, False):
        module.train(training)
        expected = module(static, dynamic)
        torch.testing.assert_close(reference.cross_aff(weights, static, dynamic, training), expected,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_reference_silence_detector_matches_the_suite(seed):
    rng = np.random.default_rng(seed)
    y = (1e-3 * rng.standard_normal(40_000)).astype(np.float32)
    for start in rng.integers(0, 36_000, size=3):
        y[start : start + 4000] += np.sin(np.arange(4000) * 0.05 * (seed + 1)).astype(np.float32)
    np.testing.assert_array_equal(reference.remove_silence(y), silence.remove_silence(y))


def test_peer_feature_paths_compute_the_suites_features():
    rng = np.random.default_rng(1)
    clip = (0.1 * np.sin(np.arange(mfcc.SAMPLE_RATE) * 0.07) + 0.01 * rng.standard_normal(mfcc.SAMPLE_RATE))
    clip = clip.astype(np.float32)
    with torch.inference_mode():
        ours = [t[0].numpy() for t in mfcc.extract(torch.from_numpy(clip)[None])]
        plain = [t.numpy() for t in reference.torchaudio_features(torch.from_numpy(clip),
                                                                 reference.torchaudio_transform(16000, "reflect"))]
    theirs = reference.librosa_features(clip, mfcc.SAMPLE_RATE, mfcc.PAD_MODE)
    scale = np.abs(ours[0]).max()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(plain[0], ours[0], rtol=0, atol=1e-5 * scale)
    # torchaudio's delta repeats the edge values where librosa fits a line: compare away from the edges.
    np.testing.assert_allclose(plain[1][8:-8], ours[1][8:-8], rtol=0, atol=1e-5 * scale)


# The suites and the stage, on CPU at small shapes ------------------------------------------------


def test_suites_run_fast_with_benchmarks_disabled(tmp_path):
    env = {**os.environ, "SDCAFF_PARAMS": str(write_params(tmp_path))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-q", "-rs", "--bench-shapes=small",
         "--benchmark-disable"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    if not torch.cuda.is_available():
        assert "bf16 autocast variants run on CUDA only" in done.stdout


def test_stage_writes_named_json_tables_and_compare_reads_it(in_tmp, monkeypatch):
    monkeypatch.setenv("SDCAFF_PARAMS", str(write_params(in_tmp)))
    # A few cases keep the child run short: the disabled run above covers every case.
    select = "cross_aff_forward or features_silence or train_step or model_forward"
    assert cli.main(["bench", "--quick", "--shapes", "small", "--select", select]) == 0

    files = sorted((in_tmp / "bench").glob("bench-*.json"))
    assert [f.name for f in files] == [bench.result_name(
        {"torch": torch.__version__, "device": "cpu", "cpu_model": bench.cpu_model()}, "small") + ".json"]
    data = json.loads(files[0].read_text())
    kernels = {b["extra_info"]["kernel"] for b in data["benchmarks"]}
    assert kernels == {"cross_aff-forward", "cross_aff-backward", "features-silence", "train-step", "model-forward"}
    assert data["machine_info"]["sdcaff"]["commit"] and data["machine_info"]["sdcaff"]["shapes"] == "small"
    assert all(s["reason"] for s in data["sdcaff"]["skipped"]) and data["sdcaff"]["errors"] == []

    markdown = (in_tmp / "tables" / "bench.md").read_text()
    assert "| suite vs reference | cross_aff-forward |" in markdown and "| suite vs reference | features-silence |" in markdown
    assert "quick-profile study, estimated" in markdown
    assert (in_tmp / "tables" / "bench.csv").read_text().startswith(",".join(bench.CSV_COLUMNS))

    compare = subprocess.run(
        [sys.executable, "-c", "import sys; from pytest_benchmark.cli import main; sys.exit(main())", "compare",
         str(files[0]), "--group-by=group"], capture_output=True, text=True, timeout=120,
    )
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert "test_train_step[eager-fp32]" in compare.stdout
    assert not list(in_tmp.glob("bench/.*.tmp"))
