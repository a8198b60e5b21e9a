"""An exclusive lock on a run folder: two fastgp processes never write the same folder at once.

The lock is an ``flock`` on ``.fastgp.lock`` inside the folder, which holds the owner's pid and
host. The kernel drops an flock when its descriptor is closed, including when the process dies
(even by SIGKILL), so a lock file left behind by a dead process never blocks anyone: the next run
takes it over and reports it as stale. flock is per host on network file systems that do not
forward it; the pid and host in the file tell a user who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".fastgp.lock"


class RunLock:
    """``RunLock(folder).acquire()`` takes the lock or raises ValueError naming its holder;
    ``release()`` (or leaving the ``with`` block, or garbage collection) gives it back."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.stale_owner: str | None = None  # "pid N on HOST" of a dead holder taken over
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> RunLock:
        while True:
            descriptor = self._open()
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                owner = _read(descriptor)
                os.close(descriptor)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise ValueError(f"{self.folder} is in use by another fastgp process "
                                     f"({owner or 'owner unknown'}, lock {self.path}); wait for it "
                                     "to end or choose another folder") from None
                raise ValueError(f"cannot lock {self.path}: {error.strerror}") from None
            # A holder that released between our open and our flock unlinked the file: our lock
            # is then on a deleted file that nobody else sees. Start again on the current one.
            try:
                current = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(descriptor), current):
                break
            os.close(descriptor)
        # We hold the flock, so whoever wrote this file is gone without cleaning up.
        self.stale_owner = _read(descriptor) or None
        owner = f"pid {os.getpid()} on {socket.gethostname()}"
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (owner + "\n").encode(), 0)
        self._descriptor = descriptor
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(f"{self.path} is a symbolic link; fastgp writes nothing through "
                                 "a link: remove it") from None
            raise ValueError(f"cannot create the lock file {self.path}: {error.strerror}") from None

    def release(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        # Unlink before unlocking: a process waiting on this file then sees it is gone and retries.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(descriptor)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: the kernel drops the lock with the process
            pass


def _read(descriptor: int) -> str:
    return os.pread(descriptor, 200, 0).decode(errors="replace").strip()
