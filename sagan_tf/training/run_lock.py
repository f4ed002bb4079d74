"""An OS-level lock on a run directory, held by the trainer for its life.

Two trainers on one run directory would overwrite each other's
checkpoints. The lock is `fcntl.flock` on `<run_dir>/.trainer.lock`: the
kernel releases it when the process ends, however it ends (`kill -9`
included), so there is never a stale lock to clean up. The file holds the
holder's host and PID for the second trainer's message; it is never
deleted (deleting a lock file lets two processes lock two different files).

The evaluator takes no lock: it only reads.
"""

import datetime
import fcntl
import os
import socket

LOCK_FILE = ".trainer.lock"


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


class RunLock:
    """Holds the lock on `directory` from `acquire()` to `release()`.

    Args:
      directory: the run directory (it must exist).
    """

    def __init__(self, directory):
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = None

    def acquire(self):
        """Takes the lock, or raises RunLockedError naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            raise RunLockedError(
                f"another trainer is using {os.path.dirname(self.path)} "
                f"({holder or 'holder unknown'}; lock file {self.path}). "
                "Two trainers on one run directory would overwrite each "
                "other's checkpoints: stop that one first, or pass another "
                "--checkpoint_dir or --batch_size."
            ) from None
        since = datetime.datetime.now().astimezone().isoformat(
            timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()}, PID {os.getpid()}, "
                     f"since {since}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def lock_run_dir(directory):
    """Locks a local run directory; returns the RunLock, or None for a
    remote one (gs://...), where flock does not reach."""
    if "://" in directory:
        return None
    return RunLock(directory).acquire()
