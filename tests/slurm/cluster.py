"""A real one-node SLURM for the test suite: munge, slurmctld and slurmd on this machine.

``start(folder)`` installs the Debian packages when they are missing (as root, through apt-get),
starts munged if no munge daemon answers, writes ``slurm.conf`` from ``slurm.conf.in`` beside
this file (one node with this machine's CPUs, one partition ``debug`` with a 10-minute limit,
accounting off, proctrack/linuxproc) with free ports and every file under ``folder``, starts
slurmctld and slurmd in the foreground as children of this process, and waits until the node
is idle. ``Cluster.stop()`` ends what ``start`` started, by process id. Where SLURM cannot start
(not root and not installed, no package access, a daemon that does not come up) ``start``
raises ``Unavailable`` with the reason, and the tests that need it are skipped with it.

The daemons read ``SLURM_CONF``; so do sbatch, squeue, scontrol and scancel, which is how the
sweep under test (and submitit inside it) finds this cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE = Path(__file__).with_name("slurm.conf.in")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
PARTITION = "debug"
PARTITION_MAX_MINUTES = 10
DAEMONS = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd", "munged": "/usr/sbin/munged"}


class Unavailable(RuntimeError):
    """SLURM cannot run on this machine; the message says why."""


@dataclass
class Cluster:
    conf: Path
    folder: Path
    host: str
    version: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=30, check=check)

    def stop(self) -> None:
        """Cancel this cluster's jobs (their steps end with them), then SIGTERM every daemon
        started here (newest first), SIGKILL after 10 s."""
        if any(p.poll() is None for p in self.processes):
            self.command("scancel", "--full", "--partition", PARTITION, check=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.command("squeue", "--noheader", check=False).stdout.strip():
                time.sleep(0.3)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def _install() -> None:
    """apt-get install the packages missing here (as root); Unavailable when that is not possible."""
    if all(Path(path).is_file() for path in DAEMONS.values()) and shutil.which("sbatch"):
        return
    if os.geteuid() != 0:
        raise Unavailable(
            "SLURM is not installed and the tests are not running as root (apt-get install slurmctld slurmd slurm-client munge)"
        )
    if shutil.which("apt-get") is None:
        raise Unavailable("SLURM is not installed and this machine has no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *PACKAGES]
    try:
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:  # the package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], capture_output=True, env=env, timeout=600)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired as error:
        raise Unavailable(f"apt-get did not finish installing SLURM in {error.timeout:.0f} s (no package access?)") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        raise Unavailable(f"could not install SLURM with apt-get: {tail}")


def _munge_answers() -> bool:
    if shutil.which("munge") is None:
        return False
    try:
        token = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return (
            token.returncode == 0 and subprocess.run(["unmunge"], input=token.stdout, capture_output=True, timeout=10).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munge() -> subprocess.Popen | None:
    """Start munged (as the munge user, the way its package runs it) unless one already answers."""
    if _munge_answers():
        return None
    if os.geteuid() != 0:
        raise Unavailable("no munge daemon answers and the tests are not running as root to start one")
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    if not Path("/etc/munge/munge.key").is_file():
        _run("runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "--create")
    process = subprocess.Popen(
        ["runuser", "-u", "munge", "--", DAEMONS["munged"], "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 15
    while not _munge_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise Unavailable(f"munged did not start: {(process.stderr.read() or b'').decode(errors='replace').strip()}")
        time.sleep(0.2)
    return process


def _write_conf(folder: Path, host: str) -> Path:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    fields = {
        "HOST": host,
        "STATE": str(folder),
        "CTLD_PORT": str(_free_port()),
        "SLURMD_PORT": str(_free_port()),
        "CPUS": str(os.cpu_count() or 1),
        "MEMORY_MB": str(max(1, memory_mb - 512)),
        "MAX_MINUTES": str(PARTITION_MAX_MINUTES),
    }
    text = TEMPLATE.read_text()
    for key, value in fields.items():
        text = text.replace(f"@{key}@", value)
    for name in ("ctld", "slurmd"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(text)
    return conf


def start(folder: Path, timeout: float = 60.0) -> Cluster:
    """Install (when missing and possible) and start a one-node SLURM under ``folder``."""
    if os.environ.get("DCSBM_TEST_NO_SLURM"):
        raise Unavailable("DCSBM_TEST_NO_SLURM is set")
    if os.geteuid() != 0:
        raise Unavailable("the real-SLURM tests start slurmctld and slurmd, which needs root (run the suite as root, as CI does)")
    _install()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = _write_conf(folder, host)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    version = subprocess.run(["sbatch", "--version"], env=env, capture_output=True, text=True, timeout=30).stdout.strip()
    cluster = Cluster(conf=conf, folder=folder, host=host, version=version)
    try:
        munge = _start_munge()
        if munge is not None:
            cluster.processes.append(munge)
        for name, flags in (("slurmctld", ["-D", "-i"]), ("slurmd", ["-D"])):
            cluster.processes.append(
                subprocess.Popen(
                    [DAEMONS[name], *flags, "-f", str(conf)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout
        while True:
            state = cluster.command("sinfo", "--noheader", "--format=%T", f"--partition={PARTITION}", check=False)
            if state.returncode == 0 and state.stdout.strip() == "idle":
                return cluster
            dead = [p.args[0] for p in cluster.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = (
                    f"{', '.join(dead)} exited"
                    if dead
                    else f"the node is not idle after {timeout:.0f} s ({state.stdout.strip() or state.stderr.strip()})"
                )
                log = (cluster.log("slurmctld") + cluster.log("slurmd")).strip().splitlines()[-3:]
                raise Unavailable(f"SLURM did not start: {why}; {' | '.join(log)}")
            time.sleep(0.3)
    except BaseException:
        cluster.stop()
        raise
