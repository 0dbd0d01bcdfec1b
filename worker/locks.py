"""Locks shared by the worker processes of one host.

An advisory file lock (``flock``) rather than a Redis lock: the kernel releases it when its
holder dies, so a worker killed mid-write never leaves the others waiting for an expiry. The
locked file also holds one number its holders share (see :class:`Ledger`).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from embedq.config.errors import StoreUnavailableError

__all__ = ["Ledger", "host_lock"]

_STAMP = struct.Struct("<d")


class Ledger:
    """A timestamp kept in the lock's file, read and written only by the lock's holder.

    The times are ``time.monotonic()`` readings, which all processes of one host share.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self) -> float:
        data = os.pread(self._fd, _STAMP.size, 0)
        return float(_STAMP.unpack(data)[0]) if len(data) == _STAMP.size else 0.0

    def write(self, stamp: float) -> None:
        os.pwrite(self._fd, _STAMP.pack(stamp), 0)


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _path(name: str) -> Path:
    folder = Path(tempfile.gettempdir()) / f"embedq-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    # Per boot: a ledger's monotonic times mean nothing after a restart of the host.
    key = f"{_boot_id()}|{name}".encode()
    return folder / f"{hashlib.blake2b(key, digest_size=16).hexdigest()}.lock"


@contextmanager
def host_lock(name: str, wait: float) -> Iterator[Ledger]:
    """Hold the lock called ``name`` (any string) for the duration of the block.

    Waits at most ``wait`` seconds, then raises :class:`StoreUnavailableError`, which the task
    retries: a holder that is stuck (frozen, or waiting on a slow server) delays the others'
    batches, it does not fail them.
    """
    fd = os.open(_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        pause = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailableError(
                        f"another worker process held the write lock for {name!r} "
                        f"longer than {wait:g} s"
                    ) from None
                # Polled, not blocking: a blocking flock could not give up after ``wait``.
                time.sleep(pause)
                pause = min(pause * 2, 0.01)
        yield Ledger(fd)
    finally:
        os.close(fd)  # releases the lock
