"""One run per results folder at a time: a lock file holding the owner's pid and host.

A second ``dcsbm run`` of the same config refuses, naming the process that holds the folder.
A lock left by a process that no longer exists (killed with SIGKILL) is stale and taken over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process is running this experiment."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_owner(path: Path) -> tuple[int | None, str]:
    try:
        pid_text, _, host = path.read_text().strip().partition(" ")
        return int(pid_text), host
    except (OSError, ValueError):
        return None, ""


class RunLock:
    """Context manager holding ``<run_dir>/.lock`` for the current process."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.owner = f"{os.getpid()} {socket.gethostname()}"

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = _read_owner(self.path)
                if pid is not None and (host != socket.gethostname() or _process_alive(pid)):
                    raise RunLockedError(
                        f"{self.path.parent} is in use by process {pid} on {host or 'this host'} "
                        f"(lock file {self.path}); wait for it to finish or stop it first"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(self.owner)
            return
        raise RunLockedError(f"could not take the lock {self.path}: another process keeps taking it")

    def release(self) -> None:
        try:
            if self.path.read_text().strip() == self.owner:
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
