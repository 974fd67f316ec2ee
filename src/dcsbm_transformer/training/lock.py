"""One run per results folder at a time: an ``flock`` on ``<run_dir>/.lock``.

A second ``dcsbm run`` of the same config (or a ``--restart`` that would set the folder aside)
refuses, naming the process that holds the folder. The lock is ``fcntl.flock`` on the lock file,
not the file's existence: the kernel releases it when its holder's process dies however it dies
(SIGKILL, OOM, node lost), so a run is resumed without anyone deleting anything. Whatever the
file says is never used to decide: a pid from a previous life of a container (where the trainer
is pid 1 again) or from another node (a SLURM job requeued elsewhere on shared storage) is simply
stale. The file holds ``"<pid> <host>"`` of the current holder for people and for the refusal
message only. On NFS, Linux (>= 2.6.12) emulates ``flock`` with POSIX byte-range locks, so the
lock also holds between nodes sharing the folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process is running this experiment."""


def _describe_holder(path: Path) -> str:
    """``"process <pid> on <host>"`` as written by the holder; a vaguer phrase if unreadable."""
    try:
        pid_text, _, host = path.read_text().strip().partition(" ")
        return f"process {int(pid_text)} on {host or 'an unknown host'}"
    except (OSError, ValueError):  # the holder has not written it yet, or someone edited it
        return "another process"


class RunLock:
    """Context manager holding an exclusive ``flock`` on ``<run_dir>/.lock`` until exit.

    Two ``RunLock`` on the same folder conflict even inside one process: each opens its own
    file description, and ``flock`` locks belong to the description.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.owner = f"{os.getpid()} {socket.gethostname()}"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting, or raise RunLockedError naming the holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunLock is already held")
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(error.errno, f"could not lock {self.path}: {error.strerror}") from None
            raise RunLockedError(
                f"{self.path.parent} is in use by {_describe_holder(self.path)} (lock file {self.path}); "
                "wait for it to finish or stop it first"
            ) from None
        self._fd = fd
        self._write_owner(fd)

    def _open(self) -> int:
        """Open (creating if needed) the lock file; an OSError names the file."""
        try:
            return os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot open the run lock file {self.path}: {error.strerror} (the run folder must exist and be writable)"
            ) from None

    def _write_owner(self, fd: int) -> None:
        """Replace the lock file's content (``fd``, the held lock's) with our ``"pid host"``: for
        readers, never for deciding."""
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.owner.encode(), 0)

    def release(self) -> None:
        """Empty the file (no stale owner for readers), unlock and close; the file stays.

        The file is not unlinked: another process may have opened it and be about to lock it,
        and would then hold a lock on a file no longer at this path.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
