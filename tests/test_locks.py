"""The host lock that makes Milvus Lite writers take turns."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid

import pytest

from config.errors import StoreUnavailableError
from worker.locks import host_lock


def _hold(name: str, ready: multiprocessing.synchronize.Event) -> None:
    with host_lock(name, wait=5):
        ready.set()
        time.sleep(60)


def test_a_second_holder_waits_then_gets_a_retryable_error() -> None:
    name = f"test-{uuid.uuid4()}"
    with host_lock(name, wait=1):
        started = time.monotonic()
        with (
            pytest.raises(StoreUnavailableError, match="held the write lock"),
            host_lock(name, wait=0.3),
        ):
            pass
        assert time.monotonic() - started >= 0.3
    with host_lock(name, wait=0.1):  # released on exit
        pass


def test_the_lock_of_a_killed_holder_is_free_at_once() -> None:
    name = f"test-{uuid.uuid4()}"
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(name, ready))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(StoreUnavailableError), host_lock(name, wait=0.2):
            pass
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    with host_lock(name, wait=1):  # no expiry to wait for: the kernel released it
        pass


def test_locks_of_different_names_do_not_block_each_other() -> None:
    with host_lock(f"a-{uuid.uuid4()}", wait=0.1), host_lock(f"b-{uuid.uuid4()}", wait=0.1):
        pass
