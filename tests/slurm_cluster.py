"""A one-node SLURM cluster on localhost, started for a test and stopped after it.

Debian's `slurm-wlm` and `munge` (installed with apt-get when absent and we are root). The
cluster's files (munge key and socket, state, logs, pid files) live in one folder, on free ports,
so a munge already running on the machine is neither used nor touched.

The config is also written to SLURM's default path, /etc/slurm/slurm.conf, and removed at the
end: snakemake-executor-plugin-slurm-jobstep runs each job through a nested `srun` with every
SLURM_* variable dropped, SLURM_CONF included, so `srun` reads the default path. The cluster is
therefore not started where that file exists and is not ours (a real SLURM is configured here).

No accounting database, so `sacct` does not answer: the workflow polls with `squeue`, and
finished jobs stay listed for an hour (MinJobAge) so a test can read every job it submitted.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

PACKAGES = ("slurm-wlm", "munge")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
OURS = "# A one-node test cluster of mtm's tests/slurm_cluster.py; removed when the test ends.\n"
BINARIES = ("sbatch", "squeue", "sinfo", "scancel", "slurmctld", "slurmd", "munged", "mungekey")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why."""


@dataclass
class Cluster:
    env: dict[str, str]  # os.environ plus SLURM_CONF
    daemons: dict[str, int]  # name -> pid of munged, slurmctld and slurmd

    def daemons_running(self) -> list[str]:
        return [name for name, pid in self.daemons.items() if _alive(pid)]

    def jobs(self) -> pd.DataFrame:
        """Every job the cluster has seen: job_id, state, min_memory_mb, comment (Snakemake
        puts the rule or group and wildcards there), name; sorted by job_id."""
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%T|%m|%k|%j"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [line.split("|", 4) for line in out.splitlines() if line.strip()]
        jobs = pd.DataFrame(rows, columns=["job_id", "state", "min_memory", "comment", "name"])
        jobs["job_id"] = jobs["job_id"].astype(int)
        jobs["min_memory_mb"] = jobs.pop("min_memory").map(_megabytes)
        return jobs.sort_values("job_id", ignore_index=True)


def _megabytes(text: str) -> int:
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}
    return round(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@contextmanager
def local_slurm(folder: Path) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd in `folder`; yield the cluster; cancel its jobs and
    stop the three daemons by pid. Raises ClusterUnavailable before starting anything it cannot
    run."""
    _install_if_missing()
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmd (which runs jobs as their users) needs root")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # munged refuses a key or socket in a folder others can write
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    started: list[Path] = []  # pid files of the daemons started, stopped in reverse
    if DEFAULT_CONF.exists() and not DEFAULT_CONF.read_text().startswith(OURS):
        raise ClusterUnavailable(f"{DEFAULT_CONF} exists: a SLURM is configured on this machine, and the test leaves it alone")
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    try:
        _start_munge(folder, started)
        conf = OURS + _slurm_conf(folder)
        (folder / "slurm.conf").write_text(conf)
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.write_text(conf)
        for name in ("slurmctld", "slurmd"):
            _run([f"/usr/sbin/{name}", "-f", str(folder / "slurm.conf")], env, f"starting {name}")
            started.append(folder / f"{name}.pid")
        _wait_until_idle(env, folder)
        yield Cluster(env, {path.stem: _pid(path) for path in started})
    finally:
        subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=env, capture_output=True)
        for pid_file in reversed(started):
            _stop(pid_file)
        if DEFAULT_CONF.exists() and DEFAULT_CONF.read_text().startswith(OURS):
            DEFAULT_CONF.unlink()


def _install_if_missing() -> None:
    if all(shutil.which(b) or Path(f"/usr/sbin/{b}").exists() for b in BINARIES):
        return
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("SLURM is not installed, and there is no apt-get to install Debian's slurm-wlm")
    if os.geteuid() != 0:
        raise ClusterUnavailable("SLURM is not installed, and installing Debian's slurm-wlm and munge needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    try:  # bounded: a slow mirror must not eat the test run's time budget
        if subprocess.run(install, capture_output=True, env=env, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=300)
            result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
            if result.returncode != 0:
                raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {result.stderr[-500:]}")
    except subprocess.TimeoutExpired as timeout:
        raise ClusterUnavailable(f"installing Debian's {' '.join(PACKAGES)} took too long ({timeout.cmd[:2]})")


def _start_munge(folder: Path, started: list[Path]) -> None:
    key = folder / "munge.key"
    _run(["mungekey", "--create", "--keyfile", str(key)], os.environ, "creating a munge key")
    munged = [
        "munged", "--force", f"--socket={folder / 'munge.socket'}", f"--key-file={key}",
        f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
        f"--seed-file={folder / 'munged.seed'}",
    ]  # fmt: skip
    _run(munged, os.environ, "starting munged")
    started.append(folder / "munged.pid")


def _slurm_conf(folder: Path) -> str:
    """One node (this machine's CPUs) and one partition, `debug`. Memory is not a consumable
    resource and the node claims 64 GB, so that the workflow's requests (8 GB, 16 GB on a retry)
    fit on any test machine: what is under test is the plumbing, not the packing."""
    host = socket.gethostname().split(".")[0]  # slurmctld and slurmd go by the short name
    cpus = max(os.cpu_count() or 1, 2)
    ctld_port, slurmd_port = _free_port(), _free_port()
    return "\n".join([
        "ClusterName=mtmtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge.socket'}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",  # no cgroups in containers
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SlurmdParameters=config_overrides",
        "MinJobAge=3600",
        "ReturnToService=2",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=65536 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict, what: str) -> None:
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ClusterUnavailable(f"{what}: {error}")
    if result.returncode != 0:
        raise ClusterUnavailable(f"{what} failed ({' '.join(cmd)}): {result.stderr[-1000:]}")


def _wait_until_idle(env: dict, folder: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True, text=True)
        if result.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    logs = {name: (folder / name).read_text()[-1000:] for name in ("slurmctld.log", "slurmd.log") if (folder / name).exists()}
    raise ClusterUnavailable(f"the SLURM node did not become idle in {timeout:.0f} s: {logs}")


def _pid(pid_file: Path) -> int:
    return int(pid_file.read_text().split()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pid_file: Path, timeout: float = 10) -> None:
    try:
        pid = _pid(pid_file)
    except (OSError, ValueError, IndexError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            return
