"""The timing suites' harness: settings from params.yaml `bench`, device, synchronising clock, variants, memory, records.

Run with `sdcaff bench` (writes results/bench/) or `make bench`. Options: --bench-quick (short rounds),
--bench-shapes small (tiny shapes, for tests).
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import contextlib  # noqa: E402
import ctypes  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sdcaff import bench, env  # noqa: E402
from sdcaff.bench import EAGER, Variant  # noqa: E402
from sdcaff.features import FeaturesParams  # noqa: E402
from sdcaff import params as params_module  # noqa: E402
from sdcaff.losses import MultiTaskLoss, scale_center_grads  # noqa: E402
from sdcaff.model import ModelParams, build, load_params  # noqa: E402
from sdcaff.train import TrainParams  # noqa: E402

SETTINGS_KEY = pytest.StashKey["Settings"]()
OUTCOMES_KEY = pytest.StashKey["Outcomes"]()
# Warm-up iterations for the light kernels (pytest-benchmark turns them into at most `rounds` rounds):
# first calls pay for allocator growth, oneDNN primitive creation and cuBLAS/cuDNN handle set-up.
WARMUP_ITERATIONS = 10
HEAVY_WARMUP_ROUNDS = 1  # heavy cases: one untimed call first (a cold LSTM step is ~1.5x slower on CPU)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run of the suites measures, and how long it may take."""

    params: bench.BenchParams  # after --bench-shapes
    model: ModelParams  # params `profiles.<bench.profile>.model`
    train: TrainParams  # params `profiles.<bench.profile>.train`: optimiser and loss of the training step
    batch: int  # bench.batch_size, else the profile's train batch_size
    feature_batch: int  # FeaturesParams.transform_batch: utterances per transform call of `sdcaff features` here
    shapes: str
    quick: bool
    device: torch.device
    heavy_rounds: int
    load_average: float | None  # 1-minute load average when the session started

    @property
    def clip_samples(self) -> int:
        """Returns the clip length in samples (96,000 for 6 s at 16 kHz)."""
        return int(self.params.clip_seconds * bench.SAMPLE_RATE)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds --bench-quick and --bench-shapes."""
    group = parser.getgroup("sdcaff bench")
    group.addoption("--bench-quick", action="store_true",
                    help="heavy cases run bench.quick_heavy_rounds rounds (the DVC stage's CPU budget)")
    group.addoption("--bench-shapes", choices=tuple(bench.SHAPES), default="paper",
                    help="paper: the published shapes from params bench; small: tiny shapes for tests")


def load_settings(config: pytest.Config) -> Settings:
    """Returns the run's settings, read once per session from the params file ($SDCAFF_PARAMS or ./params.yaml)."""
    if SETTINGS_KEY not in config.stash:
        shapes = config.getoption("--bench-shapes")
        quick = config.getoption("--bench-quick")
        p = bench.load_params(shapes)
        env_params = params_module.load("env", env.EnvParams)
        env.configure(env_params)
        _, model = load_params(p.profile)
        train = bench.profile_train(p.profile)
        config.stash[SETTINGS_KEY] = Settings(
            params=p, model=model, train=train, batch=p.batch_size or train.batch_size,
            feature_batch=params_module.load("features", FeaturesParams).transform_batch(env.device(env_params.device)),
            shapes=shapes, quick=quick,
            device=env.device(env_params.device), heavy_rounds=p.quick_heavy_rounds if quick else p.heavy_rounds, load_average=load_average(),
        )
    return config.stash[SETTINGS_KEY]


def load_average() -> float | None:
    """Returns the 1-minute load average (None where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def cuda_clock() -> float:
    """Returns perf_counter after the GPU's queued work is done: kernels run asynchronously."""
    torch.cuda.synchronize()
    return time.perf_counter()


class Outcomes:
    """Collects skipped and failed cases, so the results file says which variants could not run and why."""

    def __init__(self):
        self.skipped: list[dict] = []
        self.errors: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keeps a skipped case's reason, or a failed case's first error line."""
        name = report.nodeid.split("::")[-1]
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped.append({"name": name, "nodeid": report.nodeid, "reason": reason.removeprefix("Skipped: ")})
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr)
            self.errors.append({"name": name, "nodeid": report.nodeid, "phase": report.when,
                                "error": message.splitlines()[0] if message else ""})


def pytest_configure(config: pytest.Config) -> None:
    """Registers the skip and failure recorder."""
    config.stash[OUTCOMES_KEY] = Outcomes()
    config.pluginmanager.register(config.stash[OUTCOMES_KEY], "sdcaff-bench-outcomes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gives every benchmark the device's clock and a warm-up; skips gpu-marked cases off CUDA, with the reason."""
    settings = load_settings(config)
    clock = cuda_clock if settings.device.type == "cuda" else time.perf_counter
    no_gpu = pytest.mark.skip(reason=f"marked gpu; this run is on {settings.device.type}")
    for item in items:
        marker = item.get_closest_marker("benchmark")
        if marker is not None:
            # Every benchmark here times with the device's clock and warms up first.
            options = {"warmup": True, "warmup_iterations": WARMUP_ITERATIONS, **marker.kwargs, "timer": clock}
            item.add_marker(pytest.mark.benchmark(**options), append=False)
        if "gpu" in item.keywords and settings.device.type != "cuda":
            item.add_marker(no_gpu)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Adds machine_info["sdcaff"]: versions, GPU and driver, CPU model, commit, shapes, rounds, timer, load."""
    settings = load_settings(config)
    record = env.provenance()  # a timing file is a measurement of one run: its commit and host belong in it
    record["device"] = settings.device.type
    record["gpu"] = torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else None
    record.update(bench.hardware_names(settings.device.type))
    machine_info["sdcaff"] = {
        **record,
        "result_name": bench.result_name(record, settings.shapes),
        # Other processes on the machine slow every case; the 1-minute load average says how busy it was.
        "load_average": {"start": settings.load_average, "end": load_average()},
        "shapes": settings.shapes,
        "quick": settings.quick,
        "profile": settings.params.profile,
        "heavy_rounds": settings.heavy_rounds,
        "timer": "cuda_clock (synchronises)" if settings.device.type == "cuda" else "time.perf_counter",
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    """Adds output_json["sdcaff"]: skipped cases with reasons, failed cases with errors, the bench settings."""
    outcomes = config.stash[OUTCOMES_KEY]
    output_json["sdcaff"] = {
        "skipped": outcomes.skipped,
        "errors": outcomes.errors,
        "settings": params_module.to_dict(load_settings(config).params),
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrizes scaling_batch and scaling_seconds from the settings."""
    # Scaling points depend on --bench-shapes, known only once options are parsed.
    p = load_settings(metafunc.config).params
    if "scaling_batch" in metafunc.fixturenames:
        metafunc.parametrize("scaling_batch", p.scaling_batches, ids=[f"batch{b}" for b in p.scaling_batches])
    if "scaling_seconds" in metafunc.fixturenames:
        metafunc.parametrize("scaling_seconds", p.scaling_seconds, ids=[f"{s:g}s" for s in p.scaling_seconds])


# ---------------------------------------------------------------------------------------------------


class PeakMemory:
    """Measures the peak memory of a block: CUDA allocator peak on GPU, resident-set rise on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None
        self.method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "VmHWM rise (clear_refs)"

    @contextlib.contextmanager
    def measure(self):
        """Yields while measuring; afterwards self.mib holds the peak in MiB above the start (None if unknown)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
            yield
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - start) / 2**20
            return
        # Linux: writing 5 to clear_refs resets the high-water mark to the current resident set, so the
        # mark read afterwards is this block's peak. Freed heap pages go back to the OS first, else the
        # block would reuse them unseen; what the allocator still holds makes the rise a lower bound.
        _release_free_heap()
        reset = _reset_high_water_mark()
        start = _status_kib("VmRSS")
        yield
        if reset and start is not None:
            self.mib = max(0.0, (_status_kib("VmHWM") - start) / 1024)


def _release_free_heap() -> None:
    """Returns freed malloc pages to the OS (glibc malloc_trim); does nothing where libc has no such call."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_high_water_mark() -> bool:
    """Returns whether the process's resident high-water mark (VmHWM) could be reset (Linux only)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    """Returns a /proc/self/status field in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Harness:
    """What every suite needs: settings, inputs, variants (skipped with a reason), and the timed run."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = settings.device

    # Inputs -------------------------------------------------------------------------------------
    def frames(self, seconds: float) -> int:
        """Returns MFCC frames for a clip of `seconds` (251 for 6 s, centred frames)."""
        return 1 + int(seconds * bench.SAMPLE_RATE) // bench.HOP_LENGTH

    def model_batch(self, batch: int | None = None, seconds: float | None = None) -> tuple[torch.Tensor, ...]:
        """Returns seeded static (B, 1, n_mfcc, T), dynamic (B, T, 3 n_mfcc), emotion (B,), gender (B,) on the device."""
        batch = batch or self.settings.batch
        frames = self.frames(seconds or self.settings.params.clip_seconds)
        n = self.settings.model.n_mfcc
        generator = torch.Generator().manual_seed(bench.SEED)
        static = torch.randn(batch, 1, n, frames, generator=generator)
        dynamic = torch.randn(batch, frames, 3 * n, generator=generator)
        emotion = torch.randint(0, self.settings.model.n_classes, (batch,), generator=generator)
        gender = torch.randint(0, 2, (batch,), generator=generator)
        return tuple(t.to(self.device) for t in (static, dynamic, emotion, gender))

    def waves(self, count: int | None = None, seconds: float | None = None) -> list[np.ndarray]:
        """Returns `count` seeded speech-like utterances of `seconds` at 16 kHz: each (samples,) float32."""
        count = count or self.settings.params.utterances
        n = int((seconds or self.settings.params.clip_seconds) * bench.SAMPLE_RATE)
        rng = np.random.default_rng(bench.SEED)
        t = np.arange(n) / bench.SAMPLE_RATE
        out = []
        for _ in range(count):
            # Harmonic bursts (syllables of 0.1-0.4 s) over faint hiss, with pauses the silence detector cuts.
            y = 1e-3 * rng.standard_normal(n)
            f0 = rng.uniform(100, 250)
            start = int(rng.uniform(0.1, 0.5) * bench.SAMPLE_RATE)
            while start < n:
                length = int(rng.uniform(0.1, 0.4) * bench.SAMPLE_RATE)
                stop = min(n, start + length)
                envelope = np.hanning(stop - start)
                tone = sum(np.sin(2 * np.pi * f0 * k * t[start:stop]) / k for k in range(1, 6))
                y[start:stop] += 0.3 * envelope * tone
                start = stop + int(rng.uniform(0.05, 0.6) * bench.SAMPLE_RATE)
            out.append(y.astype(np.float32))
        return out

    def train_step(self, variant: Variant, batch: int | None = None) -> Callable[[], torch.Tensor]:
        """Returns one step of sdcaff/train.py's loop as a closure: forward, loss, backward, center rescale, Adam."""
        train = self.settings.train
        model = build(self.settings.model).to(self.device).train()
        loss_fn = MultiTaskLoss(train.loss, self.settings.model.n_classes).to(self.device)
        optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=train.lr,
                                     weight_decay=train.weight_decay)
        forward = self.build(variant, model, heavy=True)
        static, dynamic, emotion, gender = self.model_batch(batch)

        def step() -> torch.Tensor:
            with self.autocast(variant):
                out = forward(static, dynamic)
                parts = loss_fn(out, emotion, gender)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            scale_center_grads(loss_fn, train.lr)
            optimizer.step()
            return parts.total.detach()

        return step

    # Variants -----------------------------------------------------------------------------------
    def check(self, variant: Variant, heavy: bool) -> None:
        """Skips the test, with the reason, when `variant` cannot or should not run here."""
        cpu = self.device.type == "cpu"
        if variant.precision == "bf16" and cpu:
            pytest.skip("bf16 autocast variants run on CUDA only; this run is on CPU")
        if variant.mode == "compile" and cpu:
            level = self.settings.params.compile_on_cpu
            if level == "none":
                pytest.skip("torch.compile off on CPU (bench.compile_on_cpu: none)")
            if level == "light" and heavy:
                pytest.skip("torch.compile of heavy graphs off on CPU (bench.compile_on_cpu: light): inductor "
                            "needs minutes per graph on a few cores (a train step: ~2 min on 2)")

    def build(self, variant: Variant, module: Callable, heavy: bool) -> Callable:
        """Returns `module` as `variant` runs it (eager, or torch.compile'd); skips where it cannot run."""
        self.check(variant, heavy)
        if variant.mode != "compile":
            return module
        if torch.are_deterministic_algorithms_enabled():
            env.deterministic_algorithms(torch, compiler=True)  # inductor's own flag, as training sets it
        return torch.compile(module)

    def autocast(self, variant: Variant):
        """Returns the bf16 autocast context for bf16 variants, a disabled one otherwise."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=variant.precision == "bf16")

    def time(self, benchmark, fn: Callable[[], Any], *, kernel: str, variant: Variant = EAGER, heavy: bool,
             **info) -> Any:
        """Returns fn()'s result after timing it: pedantic rounds for heavy cases, calibrated rounds otherwise."""
        benchmark.extra_info.update({"kernel": kernel, **variant._asdict(), "device": self.device.type, **info})
        if variant.mode == "compile":
            # The first call compiles: timed on its own, and a failure skips with its reason.
            start = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # inductor raises many types (missing compiler, unsupported op)
                pytest.skip(f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            benchmark.extra_info["compile_s"] = round(time.perf_counter() - start, 3)
        memory = PeakMemory(self.device)
        try:
            with memory.measure():
                if heavy:
                    result = benchmark.pedantic(fn, rounds=self.settings.heavy_rounds,
                                                warmup_rounds=HEAVY_WARMUP_ROUNDS)
                else:
                    result = benchmark(fn)
        except torch.OutOfMemoryError:
            # The size is past what the device holds: that is the finding, recorded as the skip reason.
            pytest.skip(f"out of memory on {self.device} at {info}")
        benchmark.extra_info.update({"peak_mib": None if memory.mib is None else round(memory.mib, 1),
                                     "memory_method": memory.method})
        if benchmark.stats is not None and "audio_seconds" in info:
            benchmark.extra_info["times_realtime"] = round(info["audio_seconds"] / benchmark.stats.stats.median, 1)
        return result


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest) -> Settings:
    """Returns the session's settings."""
    return load_settings(request.config)


@pytest.fixture(scope="session")
def harness(settings: Settings) -> Harness:
    """Returns the session's harness."""
    return Harness(settings)


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Seeds every case the same way, so each draws the same weights and inputs whatever ran before."""
    env.seed_everything(bench.SEED)


def pytest_report_header(config: pytest.Config) -> str:
    """Returns the header line: device, shapes, profile, rounds, threads."""
    s = load_settings(config)
    return (f"sdcaff bench: device {s.device}, shapes {s.shapes}, profile {s.params.profile}, "
            f"heavy rounds {s.heavy_rounds}, threads {torch.get_num_threads()}, python {sys.version.split()[0]}")
