"""The slurm training backend: an experiment's units as one submitit job array, watched until done.

`sdcaff train` with `train.backend: slurm` (or `--backend slurm`, or SDCAFF_TRAIN_BACKEND=slurm) hands
the units that are not done to SLURM instead of training them here, and returns when every one is done,
so `dvc repro` drives a cluster with nothing else changed. Each array task trains `units_per_job`
units, one process each, sharing the task's CPUs (and its GPU: units_per_gpu on a GPU partition). A task
runs `train.train_units`, the local backend's own code, with the same settings and thread count, so a
unit's predictions are byte-identical whichever backend trained it (same CPU kind).

A task that fails, times out, is pre-empted or vanishes is resubmitted up to `retries` times; its
units resume from their resume.pt. A unit that keeps failing fails the stage with its job log's path.
Ctrl-C (SIGINT) or SIGTERM cancels every job the stage submitted. Job logs are written under
`folder/<experiment>/<job id>/`, and `folder/<experiment>/seed_<s>_fold_<k>.err` (and .out) link to
the logs of the job that last ran the unit. They are not in the unit's directory: that is a DVC output,
whose bytes must not depend on which backend or job trained it. Each unit's provenance record names its job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from sdcaff import params
from sdcaff.errors import ParamsError, SdcaffError

log = logging.getLogger(__name__)

BACKENDS = ("local", "slurm")
BACKEND_VARIABLE = "SDCAFF_TRAIN_BACKEND"
# submitit's job states that end a job without its result file (sacct's names).
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED"}
PROGRESS_EVERY_S = 60.0  # a progress line at least this often while nothing changes
VANISHED_POLLS = 3  # a job absent from squeue this many polls in a row, with no result, has died


@dataclasses.dataclass(frozen=True)
class SlurmParams:
    """params.yaml `slurm`: where and how the slurm backend submits (site settings, not results)."""

    partition: str | None = None  # sbatch --partition; null = the cluster's default
    account: str | None = None  # sbatch --account
    qos: str | None = None  # sbatch --qos
    time_min: int = 120  # sbatch --time per array task (units_per_job units, one after another at worst)
    cpus_per_task: int | None = None  # null = the unit's pinned threads x units_per_job
    mem_gb: float | None = None  # sbatch --mem; null = the partition's default
    gpus_per_task: int = 0  # 1 on a GPU partition; the task's units share it
    units_per_job: int = 1  # units per array task, each in its own process (units_per_gpu on a GPU)
    array_parallelism: int = 256  # sbatch --array=...%N: at most N tasks at once
    retries: int = 2  # resubmissions of a failed task; its units resume from resume.pt
    poll_s: float = 10.0  # seconds between checks of the jobs' states
    folder: str = "artifacts/slurm"  # job scripts and logs: <folder>/<experiment>/<job id>/
    additional: dict[str, Any] = dataclasses.field(default_factory=dict)  # other sbatch options, {option: value}
    setup: tuple[str, ...] = ()  # shell lines run before the task (e.g. "module load cuda")

    def problems(self) -> list[str]:
        found = []
        for name in ("time_min", "units_per_job", "array_parallelism"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            found.append(f"cpus_per_task must be at least 1 or null, got {self.cpus_per_task}")
        if self.retries < 0 or self.gpus_per_task < 0:
            found.append("retries and gpus_per_task must be at least 0")
        if not self.poll_s > 0:
            found.append(f"poll_s must be > 0, got {self.poll_s}")
        return found


def load_slurm_params(path: str | os.PathLike | None = None) -> SlurmParams:
    """Returns params.yaml `slurm` (its defaults when the section is absent), range-checked."""
    path = Path(path) if path is not None else params.params_path()
    data, lines = params.read(path)
    slurm = params.build(SlurmParams, data.get("slurm") or {}, path, lines, ("slurm",))
    if slurm.problems():
        raise ParamsError(f"{path}:{lines.get(('slurm',), 1)}: slurm: " + "; ".join(slurm.problems()))
    return slurm


def choose_backend(argument: str | None, configured: str) -> str:
    """Returns the backend of this run: --backend, else SDCAFF_TRAIN_BACKEND, else params train.backend."""
    value = argument or os.environ.get(BACKEND_VARIABLE)
    if value is None:
        value = configured
    elif value == "":
        raise SdcaffError(f"{BACKEND_VARIABLE} is set but empty; unset it or name one of {list(BACKENDS)}")
    if value not in BACKENDS:
        raise SdcaffError(f"unknown training backend '{value}'; known: {', '.join(BACKENDS)}")
    return value


def packs(todo: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """Returns the units in groups of `size`, in order: one group per array task."""
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def make_executor(experiment: str, slurm: SlurmParams, threads: int, pack_size: int):
    """Returns a submitit executor for the experiment's array, or raises if SLURM is not reachable."""
    try:
        import submitit
    except ImportError as exc:  # pragma: no cover - pinned in pyproject
        raise SdcaffError("the slurm backend needs submitit (pip install -e .)") from exc
    folder = Path(slurm.folder).absolute() / experiment / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    options = {
        "name": f"sdcaff-{experiment}",
        "timeout_min": slurm.time_min,
        "cpus_per_task": slurm.cpus_per_task or threads * pack_size,
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_array_parallelism": slurm.array_parallelism,
        "slurm_additional_parameters": dict(slurm.additional),
        "slurm_setup": list(slurm.setup),
    }
    for key, value in (("slurm_partition", slurm.partition), ("slurm_account", slurm.account),
                       ("slurm_qos", slurm.qos), ("mem_gb", slurm.mem_gb)):
        if value is not None:
            options[key] = value
    if slurm.gpus_per_task:
        options["slurm_gpus_per_task"] = slurm.gpus_per_task
    executor.update_parameters(**options)
    return executor


def run_pack(experiment: str, units: list[tuple[int, int]], device: str, amp: bool, compile_model: bool,
             directory: str, params_file: str) -> list[dict]:
    """Runs in the array task: trains its units with the local backend's code and returns their results."""
    os.chdir(directory)
    os.environ["SDCAFF_PARAMS"] = params_file
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    import torch

    from sdcaff import train
    from sdcaff.data.loader import read_split

    config = train.load_config(experiment)
    split = read_split(train.split_path(config))
    options = train.Options(torch.device(device), amp, compile_model)
    log.info("job %s: %d unit(s) of %s: %s", job_name(), len(units), experiment, units)
    return list(train.train_units(config, split, [tuple(u) for u in units], options, jobs=len(units)))


def job_name() -> str | None:
    """Returns this process's SLURM job as <array job>_<task> (or <job>), None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


@dataclasses.dataclass
class Task:
    """One array task being watched: its units, its submitit job, how often it was submitted."""

    units: list[tuple[int, int]]
    job: Any
    attempts: int = 1
    missing: int = 0  # consecutive polls in which squeue did not list the job


def train_on_slurm(config, split, todo: list[tuple[int, int]], options, slurm: SlurmParams) -> Iterator[dict]:
    """Yields each unit's result as its array task finishes; raises once a task has failed too often."""
    executor = make_executor(config.experiment, slurm, config.env.threads, slurm.units_per_job)
    args = (options.device.type, options.amp, options.compile, str(Path.cwd()),
            str(params.params_path().absolute()))
    groups = packs(todo, slurm.units_per_job)
    jobs = executor.map_array(run_pack, *zip(*[(config.experiment, g, *args) for g in groups]))
    tasks = [Task(g, j) for g, j in zip(groups, jobs)]
    for task in tasks:
        _link_logs(config.experiment, slurm, task)
    log.info("submitted %d unit(s) of %s as %d array task(s) of job %s (logs under %s)", len(todo),
             config.experiment, len(tasks), jobs[0].job_id.split("_")[0], Path(slurm.folder) / config.experiment)
    start, done, retried, shown = time.monotonic(), 0, 0, None
    with _cancel_on_interrupt(tasks):
        while tasks:
            listed = _squeue([t.job.job_id for t in tasks])
            for task in list(tasks):
                outcome = _outcome(task, listed)
                if outcome is None:
                    continue
                tasks.remove(task)
                if outcome == "done":
                    for result in task.job.result():
                        done += 1
                        yield result
                    continue
                if task.attempts > slurm.retries:
                    raise SdcaffError(_failure_message(config.experiment, task, outcome))
                job = executor.submit(run_pack, config.experiment, task.units, *args)
                log.warning("job %s (%s units %s) %s; resubmitted as job %s (attempt %d of %d), resuming "
                            "from resume.pt", task.job.job_id, config.experiment, task.units, outcome,
                            job.job_id, task.attempts + 1, slurm.retries + 1)
                tasks.append(Task(task.units, job, task.attempts + 1))
                _link_logs(config.experiment, slurm, tasks[-1])
                retried += 1
            if tasks:
                shown = _progress(config.experiment, done, len(todo), tasks, retried, start, shown)
                time.sleep(slurm.poll_s)
    log.info("%s: %d unit(s) done on SLURM in %.0f s (%d resubmission(s))", config.experiment, done,
             time.monotonic() - start, retried)


def unit_log(experiment: str, slurm: SlurmParams, seed: int, fold: int, stream: str = "err") -> Path:
    """Returns the link to the log of the job that last trained (or is training) the unit."""
    return Path(slurm.folder) / experiment / f"seed_{seed}_fold_{fold}.{stream}"


def _link_logs(experiment: str, slurm: SlurmParams, task: Task) -> None:
    """Points each of the task's units' log links at the task's job logs (relative links: the folder can move)."""
    for seed, fold in task.units:
        for stream, target in (("err", task.job.paths.stderr), ("out", task.job.paths.stdout)):
            link = unit_log(experiment, slurm, seed, fold, stream)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(os.path.relpath(Path(target).absolute(), link.parent.absolute()))


def _outcome(task: Task, listed: set[str] | None) -> str | None:
    """Returns 'done', a failure in words, or None while the task is pending or running."""
    job = task.job
    if job.done():
        # submitit writes the result file for a Python exception too: the task ran and raised.
        return "done" if job.exception() is None else "raised " + _last_line(str(job.exception()))
    state = job.state.split()[0] if job.state else "UNKNOWN"
    if state in FAILED_STATES:
        return f"ended {state}"
    if listed is not None:
        task.missing = 0 if job.job_id in listed else task.missing + 1
        if task.missing >= VANISHED_POLLS:  # no accounting (sacct) to ask: squeue no longer knows it
            return "ended without a result (killed, cancelled or pre-empted)"
    return None


def _squeue(job_ids: list[str]) -> set[str] | None:
    """Returns the ids squeue lists among the jobs' arrays (one per task), None if squeue cannot be asked."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # squeue exits 1 for ids it has forgotten (all ended): an empty list, unless it could not answer.
        return set() if "Invalid job id" in out.stderr else None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _failure_message(experiment: str, task: Task, outcome: str) -> str:
    paths = task.job.paths
    tail = ""
    with contextlib.suppress(OSError):
        lines = paths.stderr.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join("    " + line for line in lines[-15:])
    return (f"{experiment} units {task.units} failed {task.attempts} time(s); last job {task.job.job_id} "
            f"{outcome}. Its log: {paths.stderr} (and {paths.stdout})" + (f"\n{tail}" if tail else ""))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def _progress(experiment: str, done: int, total: int, tasks: list[Task], retried: int, start: float,
              shown: tuple | None) -> tuple:
    """Logs units done / pending / resubmitted with an ETA when they change, else once a minute; returns what it showed."""
    now = time.monotonic()
    counts = (done, len(tasks), retried)
    if shown is not None and shown[0] == counts and now - shown[1] < PROGRESS_EVERY_S:
        return shown
    pending, elapsed = total - done, now - start
    eta = f", ETA {elapsed / done * pending / 60:.1f} min" if done else ""
    log.info("slurm %s: %d of %d units done, %d pending in %d task(s), %d resubmitted, %.0f s%s", experiment,
             done, total, pending, len(tasks), retried, elapsed, eta)
    return counts, now


@contextlib.contextmanager
def _cancel_on_interrupt(tasks: list[Task]):
    """Cancels every watched job when the stage is interrupted (Ctrl-C, SIGTERM) or fails."""
    previous = signal.getsignal(signal.SIGTERM)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    in_main = _is_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except BaseException:
        for task in tasks:
            with contextlib.suppress(Exception):
                task.job.cancel(check=False)
        if tasks:
            log.warning("cancelled %d SLURM job(s): %s", len(tasks), ", ".join(t.job.job_id for t in tasks))
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
