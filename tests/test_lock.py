"""The run lock: held by a live process only, whatever the lock file says."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from dcsbm_transformer.training.lock import LOCK_FILE, RunLock, RunLockedError

HOLDER = """
import sys, time
from dcsbm_transformer.training.lock import RunLock
with RunLock(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(folder) -> subprocess.Popen:
    """A process that takes the lock on ``folder`` and keeps it; returns once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    if line.strip() != "ready":
        holder.kill()
        raise AssertionError(f"the holder did not take the lock: {line!r}, exit {holder.wait()}")
    return holder


def test_a_stale_lock_with_our_own_pid_is_taken_over(tmp_path):
    # a container restarted: the trainer is the same pid (1) as the run that wrote the file
    (tmp_path / LOCK_FILE).write_text(f"{os.getpid()} {socket.gethostname()}")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} {socket.gethostname()}"


def test_a_lock_written_on_another_host_is_taken_over(tmp_path):
    # a SLURM job requeued onto another node: the file names the node it ran on before
    (tmp_path / LOCK_FILE).write_text("12345 other-node")
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} {socket.gethostname()}"


def test_a_live_holder_in_another_process_refuses_until_it_is_killed(tmp_path):
    holder = hold_in_another_process(tmp_path)
    try:
        with pytest.raises(RunLockedError, match=rf"in use by process {holder.pid} on .*wait for it to finish"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).read_text().startswith(f"{holder.pid} ")  # left behind, yet stale
    with RunLock(tmp_path):  # the kernel released it with the process: nobody had to clean up
        pass


def test_two_locks_on_one_folder_in_one_process_conflict(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(RunLockedError, match=rf"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path):
        pass


def test_the_lock_file_survives_release_empty_and_lockable(tmp_path):
    with RunLock(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).is_file() and (tmp_path / LOCK_FILE).read_text() == ""
    for _ in range(2):
        with RunLock(tmp_path):
            pass


def test_a_missing_run_folder_is_named(tmp_path):
    with pytest.raises(OSError, match=rf"cannot open the run lock file {tmp_path / 'missing' / LOCK_FILE}"):
        RunLock(tmp_path / "missing").acquire()
