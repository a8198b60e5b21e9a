"""The run folder's lock: exclusive, named after its holder, gone with its process."""

import os
import socket
import subprocess
import sys

import pytest

import fastgp.train.run_lock as run_lock_module
from fastgp.train.run_lock import LOCK_FILE, RunLock

# The holder runs the lock module alone (no torch import): it takes the lock and waits.
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.RunLock(sys.argv[2]).acquire()  # kept: a dropped lock is released
print("locked", flush=True)
time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_refused_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, run_lock_module.__file__,
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"in use by another fastgp process \(pid "
                                             rf"{holder.pid} on {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    lock = RunLock(tmp_path).acquire()
    assert lock.stale_owner == f"pid {holder.pid} on {socket.gethostname()}"
    assert (tmp_path / LOCK_FILE).read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_exclusive_within_a_process_and_released_by_with(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held and lock.stale_owner is None
        with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not lock.held and not (tmp_path / LOCK_FILE).exists()
    RunLock(tmp_path).acquire().release()


def test_a_linked_lock_file_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_FILE).symlink_to(target)
    with pytest.raises(ValueError, match="is a symbolic link"):
        RunLock(tmp_path / "run").acquire()
    assert target.read_text() == "precious"
