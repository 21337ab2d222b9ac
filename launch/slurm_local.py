"""`gencond slurm-local start|stop|status`: a real single-node SLURM on this machine, for tests
and demos. Needs root. Installs slurm-wlm and munge with apt when missing, starts munged,
slurmctld and slurmd only if they are not already running, and `stop` stops only what `start`
started (recorded in STATE_DIR/started.json)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from common.errors import GencondError

STATE_DIR = Path("/var/tmp/gencond-slurm")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MARKER = "# written by gencond slurm-local"
DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(GencondError):
    """SLURM cannot be started here (not root, no apt, a daemon refuses to start)."""


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SlurmUnavailable(f"{what} failed ({' '.join(cmd[:3])}...): {tail[0]}")


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(1000, int(line.split()[1]) // 1024 - 1024)
    return 4000


def slurm_conf(host: str, cpus: int, memory_mb: int, state: Path) -> str:
    """A one-node cluster: no cgroups (they fail in containers), no accounting. A job that asks
    for no memory gets its CPUs' share (DefMemPerCPU), not the whole node's."""
    return f"""{MARKER}
ClusterName=gencond-local
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=10
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
DefMemPerCPU={max(100, memory_mb // max(1, cpus))}
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _install() -> None:
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
        _run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], "installing slurm-wlm")


def _start_munge(started: list[str]) -> None:
    if _running("munged"):
        return
    if not MUNGE_KEY.is_file():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
    for d in (MUNGE_KEY.parent, Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        d.mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    _run(["runuser", "-u", "munge", "--", "munged"], "starting munged")
    started.append("munged")


def _wait_idle(timeout: float = 60) -> str:
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        last = done.stdout.strip()
        if done.returncode == 0 and last in ("idle", "mixed", "allocated"):
            return last
        time.sleep(0.5)
    raise SlurmUnavailable(
        f"the local SLURM node did not come up within {timeout:.0f} s "
        f"(sinfo: {last or 'no answer'}; logs in {STATE_DIR})"
    )


def start() -> dict:
    """Start what is not running; returns {"started": [...], "state": ..., "conf": ...}."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("a local SLURM needs root (apt-get, munged, slurmd)")
    _install()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    record = STATE_DIR / "started.json"
    started: list[str] = json.loads(record.read_text()) if record.is_file() else []
    _start_munge(started)
    ours = not SLURM_CONF.is_file() or SLURM_CONF.read_text().startswith(MARKER)
    if ours and not _running("slurmctld"):
        for d in ("ctld", "d"):
            (STATE_DIR / d).mkdir(parents=True, exist_ok=True)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(
            slurm_conf(socket.gethostname(), os.cpu_count() or 1, _memory_mb(), STATE_DIR)
        )
    for daemon in ("slurmctld", "slurmd"):
        if not _running(daemon):
            clear = ["-c"] if daemon == "slurmctld" and ours else []  # forget old jobs
            _run([daemon, *clear], f"starting {daemon}")
            started.append(daemon)
    record.write_text(json.dumps(sorted(set(started))))
    state = _wait_idle()
    return {"started": sorted(set(started)), "node": state, "conf": str(SLURM_CONF)}


def stop() -> dict:
    """Stop the daemons `start` started (slurmd, slurmctld, then munged)."""
    record = STATE_DIR / "started.json"
    started = json.loads(record.read_text()) if record.is_file() else []
    cancelled = cancel_all_jobs() if "slurmctld" in started and _running("slurmctld") else []
    stopped = []
    for daemon in ("slurmd", "slurmctld", "munged"):
        if daemon in started and _running(daemon):
            subprocess.run(["pkill", "-x", daemon], capture_output=True)
            stopped.append(daemon)
    record.unlink(missing_ok=True)
    return {"stopped": stopped, "cancelled jobs": cancelled}


def queued_jobs() -> list[str]:
    """Ids of the jobs the controller knows (pending, running or completing)."""
    done = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else []


def cancel_all_jobs(timeout: float = 30) -> list[str]:
    """Cancel every job on this local cluster and wait until the queue is empty."""
    jobs = queued_jobs()
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)
    deadline = time.time() + timeout
    while queued_jobs() and time.time() < deadline:
        time.sleep(0.5)
    return jobs


def status() -> dict:
    running = {d: _running(d) for d in DAEMONS}
    info = ""
    if shutil.which("sinfo") and running["slurmctld"]:
        info = subprocess.run(
            ["sinfo", "-h", "-o", "%P %D %T"], capture_output=True, text=True
        ).stdout.strip()
    return {**running, "sinfo": info or "-"}


def available() -> bool:
    """True when sbatch can reach a controller right now."""
    if not shutil.which("sinfo"):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
