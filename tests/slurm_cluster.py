"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd on this machine, in a tmp dir.

Needs root and Debian's slurm-wlm and munge (`.ci/run` installs them). `start(directory)` writes a munge
key and a slurm.conf under `directory`, starts the three daemons on free ports with their own sockets
(nothing in /etc is touched, so a cluster the machine already runs is left alone), waits until the node
is idle and returns the environment (SLURM_CONF) that sbatch, squeue and submitit need.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


def unavailable() -> str | None:
    """Returns why no cluster can start here, or None when one can."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting a test SLURM cluster needs root (slurmd runs jobs as their users)"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _node_memory_mb(env: dict) -> int:
    """Returns the memory slurmd sees (`slurmd -C`), a little under it so the node is not drained."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, env=env, check=True).stdout
    for field in out.split():
        if field.startswith("RealMemory="):
            return max(1, int(int(field.split("=", 1)[1]) * 0.9))
    raise RuntimeError(f"slurmd -C printed no RealMemory: {out!r}")


class Cluster:
    """The daemons of one test cluster; stop() ends them and cancels what is left."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf")}
        self.pid_files = [directory / name for name in ("slurmd.pid", "slurmctld.pid", "munged.pid")]

    def start(self, timeout_s: float = 60.0) -> "Cluster":
        d = self.directory
        for sub in ("state", "spool", "munge", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "munge", 0o700)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        munge_socket = d / "munge" / "munge.socket"
        subprocess.run(["munged", "--force", f"--socket={munge_socket}", f"--key-file={key}",
                        f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'log' / 'munged.log'}",
                        f"--seed-file={d / 'munge' / 'munged.seed'}"], check=True, env=self.env)
        host = socket.gethostname().split(".")[0]
        ctld_port, slurmd_port = _free_ports(2)
        cpus = os.cpu_count() or 1
        conf = f"""\
ClusterName=sdcafftest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=30
KillWait=5
InactiveLimit=0
SlurmdTimeout=30
NodeName={host} CPUs={cpus} RealMemory={{memory}} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        (d / "slurm.conf").write_text(conf.replace("{memory}", "1"))
        memory = _node_memory_mb(self.env)
        (d / "slurm.conf").write_text(conf.replace("{memory}", str(memory)))
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon], check=True, env=self.env)
            if daemon == "slurmctld":
                self._wait(lambda: self._ask(["sinfo", "--noheader"]) is not None, timeout_s, "slurmctld answers")
        self._wait(lambda: (self._ask(["sinfo", "--noheader", "--format=%t"]) or "").strip() == "idle",
                   timeout_s, "the node is idle")
        return self

    def _ask(self, command: list[str]) -> str | None:
        out = subprocess.run(command, capture_output=True, text=True, env=self.env, check=False, timeout=30)
        return out.stdout if out.returncode == 0 else None

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if ready():
                return
            time.sleep(0.3)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((self.directory / "log").glob("*.log")))
        self.stop()
        raise RuntimeError(f"test SLURM cluster: timed out waiting until {what}\n{logs}")

    def jobs(self) -> list[str]:
        """Returns the ids of the jobs squeue lists (array tasks one by one)."""
        out = self._ask(["squeue", "--noheader", "--array", "--format=%i"]) or ""
        return [line.strip() for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True, check=False)
        for pid_file in self.pid_files:
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.5)
