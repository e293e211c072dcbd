"""The slurm training backend (sdcaff/cluster.py) against a real single-node SLURM cluster, and the unit lock.

The `slurm` tests start munged, slurmctld and slurmd (tests/slurm_cluster.py); where that cannot be done
(no slurm-wlm, not root) they are skipped with the reason. `.ci/run` installs the packages.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import fake_study
from sdcaff import cli, cluster, train
from sdcaff.errors import ParamsError, SdcaffError
from test_train import outcome, unit

pytestmark = pytest.mark.usefixtures("restore_threads")

FAST_SLURM = {"poll_s": 0.5, "retries": 1, "time_min": 10}
LONG_TRAIN = {**fake_study.TINY_TRAIN, "epochs": 300}  # ~15 s: long enough to be killed in the middle


def study(root: Path, train: dict | None = None, experiments: dict | None = None, slurm: dict | None = None) -> Path:
    """Writes the fake study's inputs and a params.yaml with a `slurm` section under root."""
    fake_study.write_study(root)
    fake_study.write_params(root / "params.yaml", train=train, experiments=experiments)
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["slurm"] = {**FAST_SLURM, **(slurm or {})}
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The honest experiment's units trained by the local backend: what the slurm backend must reproduce."""
    root = study(tmp_path_factory.mktemp("local"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv(cluster.BACKEND_VARIABLE, raising=False)
        assert cli.main(["train", "--experiment", "honest"]) == 0
    return root


def sdcaff_train(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Starts `sdcaff train` in root as its own process (for kills and signals), output to root/train.log."""
    log = open(root / "train.log", "w")
    return subprocess.Popen([sys.executable, "-m", "sdcaff.cli", "train", *args], cwd=root, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def wait_for(condition, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def job_logs(root: Path, experiment: str) -> str:
    return "\n".join(p.read_text(errors="replace")
                     for p in sorted((root / "artifacts/slurm" / experiment).glob("*/*_log.*")))


# --- backend choice and settings (no cluster needed) -------------------------------------------------

def test_the_backend_comes_from_the_argument_then_the_variable_then_params(monkeypatch):
    monkeypatch.delenv(cluster.BACKEND_VARIABLE, raising=False)
    assert cluster.choose_backend(None, "local") == "local"
    assert cluster.choose_backend(None, "slurm") == "slurm"
    monkeypatch.setenv(cluster.BACKEND_VARIABLE, "slurm")
    assert cluster.choose_backend(None, "local") == "slurm"
    assert cluster.choose_backend("local", "slurm") == "local"
    monkeypatch.setenv(cluster.BACKEND_VARIABLE, "")
    with pytest.raises(SdcaffError, match="set but empty"):
        cluster.choose_backend(None, "local")
    monkeypatch.setenv(cluster.BACKEND_VARIABLE, "kubernetes")
    with pytest.raises(SdcaffError, match="unknown training backend 'kubernetes'"):
        cluster.choose_backend(None, "local")


def test_slurm_settings_are_read_and_checked(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("env: {threads: 1}\n")
    assert cluster.load_slurm_params(path) == cluster.SlurmParams()  # absent section: the defaults
    path.write_text("slurm:\n  partition: gpu\n  additional: {constraint: h100}\n  setup: [module load cuda]\n")
    slurm = cluster.load_slurm_params(path)
    assert (slurm.partition, slurm.additional, slurm.setup) == ("gpu", {"constraint": "h100"}, ("module load cuda",))
    path.write_text("slurm:\n  partition: gpu\n  units_per_job: 0\n")
    with pytest.raises(ParamsError, match=r"params.yaml:1: slurm: units_per_job must be at least 1"):
        cluster.load_slurm_params(path)
    path.write_text("slurm:\n  partition: gpu\n  gpu: 1\n")
    with pytest.raises(ParamsError, match=r"params.yaml:3: unknown key 'slurm.gpu'"):
        cluster.load_slurm_params(path)


def test_units_are_packed_in_order():
    units = [(7, 0), (7, 1), (8, 0), (8, 1), (9, 0)]
    assert cluster.packs(units, 2) == [[(7, 0), (7, 1)], [(8, 0), (8, 1)], [(9, 0)]]
    assert cluster.packs(units, 1) == [[u] for u in units]


def test_the_backend_changes_no_unit_key_and_no_resolved_setting(tmp_path):
    from sdcaff import resolve

    study(tmp_path)
    fake_study.write_params(tmp_path / "params.yaml", train={**fake_study.TINY_TRAIN, "backend": "slurm"})
    os.chdir(tmp_path)
    try:
        on_slurm = train.load_config("honest")
        fake_study.write_params(tmp_path / "params.yaml")
        here = train.load_config("honest")
    finally:
        os.chdir(Path(__file__).parent.parent)
    assert (on_slurm.train.backend, here.train.backend) == ("slurm", "local")
    assert on_slurm.record() == here.record()
    assert on_slurm.resolved() == here.resolved()


@pytest.mark.reliability("interruption")
def test_a_unit_another_process_holds_is_waited_for_then_not_trained_again(local, tmp_path, monkeypatch, caplog):
    shutil.copytree(local / "artifacts/features", tmp_path / "artifacts/features")
    shutil.copytree(local / "artifacts/splits", tmp_path / "artifacts/splits")
    shutil.copy(local / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    lock = tmp_path / "artifacts/locks/honest/seed_7_fold_0.lock"
    held, waiting = threading.Event(), threading.Event()

    def other_stage():  # holds the unit's lock, and finishes the unit while the stage under test waits for it
        with train.unit_lock(lock):
            held.set()
            waiting.wait(60)
            shutil.copytree(unit(local, "honest"), unit(tmp_path, "honest"))

    class Waiting(logging.Handler):
        def emit(self, record):
            if "waiting for it" in record.getMessage():
                waiting.set()

    handler = Waiting()
    logging.getLogger("sdcaff.train").addHandler(handler)
    other = threading.Thread(target=other_stage)
    other.start()
    held.wait(10)
    trained_here = []
    monkeypatch.setattr(train, "train_epoch", lambda *args: trained_here.append(1))
    try:
        with caplog.at_level(logging.INFO, logger="sdcaff.train"):
            assert cli.main(["train", "--experiment", "honest", "--fold", "0"]) == 0
    finally:
        logging.getLogger("sdcaff.train").removeHandler(handler)
        other.join(10)
    assert waiting.is_set() and trained_here == []
    assert "trained meanwhile by another process" in caplog.text
    assert outcome(unit(tmp_path, "honest")) == outcome(unit(local, "honest"))


def test_a_lock_is_released_when_its_holder_dies(tmp_path):
    lock = tmp_path / "locks/unit.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from sdcaff.train import unit_lock\n"
                               f"with unit_lock(Path({str(lock)!r})):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert "pid" in lock.read_text()
    holder.kill()
    holder.wait()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (train.unit_lock(lock).__enter__(), done.set()), daemon=True)
    thread.start()
    assert done.wait(10), "the lock of a killed holder was not released"


# --- against a real SLURM cluster ----------------------------------------------------------------------

@pytest.mark.slurm
def test_slurm_trains_every_unit_with_the_local_backends_predictions(slurm, local, tmp_path, monkeypatch):
    study(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--experiment", "honest", "--backend", "slurm"]) == 0
    for fold in (0, 1):
        directory = unit(tmp_path, "honest", fold=fold)
        assert (directory / "done").is_file()
        assert outcome(directory) == outcome(unit(local, "honest", fold=fold))
        provenance = json.loads((tmp_path / f"artifacts/provenance/train/honest/seed_7_fold_{fold}.json").read_text())
        assert provenance["slurm_job"]  # the array task that trained it
    logs = job_logs(tmp_path, "honest")
    assert logs.count("job ") >= 2 and "unit(s) of honest" in logs
    wait_for(lambda: slurm.jobs() == [], 30, "the finished tasks to leave the queue")
    for fold in (0, 1):  # each unit's log, beside the others, links to its job's
        assert "unit(s) of honest: [(7, %d)]" % fold in (tmp_path / f"artifacts/slurm/honest/seed_7_fold_{fold}.err").read_text()
    # Done units are not submitted again.
    submitted = sorted((tmp_path / "artifacts/slurm/honest").glob("*/*_submitted.pkl"))
    assert len(submitted) == 2
    assert cli.main(["train", "--experiment", "honest", "--backend", "slurm"]) == 0
    assert sorted((tmp_path / "artifacts/slurm/honest").glob("*/*_submitted.pkl")) == submitted


@pytest.mark.slurm
@pytest.mark.reliability("interruption")
def test_a_killed_job_is_resubmitted_and_resumes_to_the_same_result(slurm, tmp_path_factory, tmp_path):
    reference = study(tmp_path_factory.mktemp("long-local"), train=LONG_TRAIN)
    local_run = sdcaff_train(reference, "--experiment", "honest", "--fold", "0", env={cluster.BACKEND_VARIABLE: "local"})
    study(tmp_path, train=LONG_TRAIN)
    stage = sdcaff_train(tmp_path, "--experiment", "honest", "--fold", "0", "--backend", "slurm")
    resume = unit(tmp_path, "honest") / "resume.pt"
    wait_for(resume.is_file, 120, "the job's first epochs (resume.pt)")
    job = wait_for(slurm.jobs, 10, "the running job")[0]
    subprocess.run(["scancel", job], env=slurm.env, check=True)  # as a pre-emption (SIGTERM, then SIGKILL) would
    assert stage.wait(300) == 0, (tmp_path / "train.log").read_text()
    assert local_run.wait(300) == 0
    log = (tmp_path / "train.log").read_text()
    assert f"job {job} " in log and "resubmitted as job" in log
    assert "resuming after epoch" in job_logs(tmp_path, "honest")
    assert outcome(unit(tmp_path, "honest")) == outcome(unit(reference, "honest"))


@pytest.mark.slurm
@pytest.mark.reliability("interruption")
def test_a_unit_that_keeps_failing_fails_the_stage_with_its_log(slurm, tmp_path, monkeypatch, capsys):
    experiments = {"broken": {"model": "broken.py", "protocol": "honest", "features": {"train": "iemocap",
                                                                                        "test": "iemocap"}}}
    study(tmp_path, experiments=experiments)
    (tmp_path / "broken.py").write_text(
        "import dataclasses\n\n@dataclasses.dataclass(frozen=True)\nclass Params:\n    n_classes: int = 4\n\n"
        "def build(params):\n    raise RuntimeError('this model cannot be built')\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--experiment", "broken", "--fold", "0", "--backend", "slurm"]) == 1
    err = capsys.readouterr().err
    assert "broken units [(7, 0)] failed 2 time(s)" in err and "this model cannot be built" in err
    log_path = Path(err.split("Its log: ")[1].split()[0])
    assert log_path.is_file() and "this model cannot be built" in log_path.read_text()
    assert not (unit(tmp_path, "broken") / "done").exists()


@pytest.mark.slurm
@pytest.mark.reliability("interruption")
def test_interrupting_the_stage_cancels_its_jobs(slurm, tmp_path):
    study(tmp_path, train=LONG_TRAIN)
    stage = sdcaff_train(tmp_path, "--experiment", "honest", "--backend", "slurm")
    wait_for(lambda: len(slurm.jobs()) == 2, 60, "two submitted array tasks")
    stage.send_signal(signal.SIGINT)
    assert stage.wait(60) == 130
    wait_for(lambda: slurm.jobs() == [], 30, "the stage's jobs to be cancelled")
    assert "cancelled 2 SLURM job(s)" in (tmp_path / "train.log").read_text()
