"""The host lock that makes Milvus Lite flushes take turns, and the flushes writers share."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from embedq.config.errors import StoreUnavailableError
from embedq.config.names import SERIALIZED
from embedq.config.settings import MilvusSettings
from embedq.worker.locks import host_lock
from embedq.worker.milvus import MilvusStore
from embedq.worker.store import Rows


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


class RecordingClient:
    """Stands in for pymilvus's client: records upserts and flushes of a Milvus Lite server."""

    def __init__(self, version: str = "milvus_lite-3.2.2") -> None:
        self.calls: list[str] = []
        self.version = version

    def get_server_version(self) -> str:
        return self.version

    def _get_connection(self) -> RecordingClient:
        # The handler that sends a prebuilt request (embedq.worker.speedups.upsert.send_upsert).
        return self

    def upsert(self, collection: str, entities: list[object], **kwargs: Any) -> SimpleNamespace:
        self.calls.append("upsert")
        return SimpleNamespace(upsert_count=kwargs["upsert_param"].num_rows)

    def flush(self, collection: str, timeout: float) -> None:
        self.calls.append("flush")


def lite_store(
    name: str, version: str = "milvus_lite-3.2.2"
) -> tuple[MilvusStore, RecordingClient]:
    store = MilvusStore(
        MilvusSettings(uri="http://127.0.0.1:1"), write_lock=lambda c: host_lock(name + c, wait=1)
    )
    client = RecordingClient(version)
    store._client = client
    return store, client


def rows() -> Rows:
    vectors = np.ones((2, 4), dtype=np.float32)
    return Rows(ids=["a", "b"], texts=["x", "y"], metadata=[{}, {}], vectors=vectors)


def test_each_batch_on_milvus_lite_is_flushed_before_upsert_returns() -> None:
    store, client = lite_store(f"flush-{uuid.uuid4()}")
    store.upsert("c", rows())
    store.upsert("c", rows())
    assert client.calls == ["upsert", "flush", "upsert", "flush"]


def test_embedqs_own_lite_server_and_milvus_servers_need_no_flush() -> None:
    # embedq's Lite server logs each write before answering (embedq/stack/lite_server.py)
    for version in ("milvus_lite-3.2.2" + SERIALIZED, "v2.3.5"):
        store, client = lite_store(f"noflush-{uuid.uuid4()}", version)
        store.upsert("c", rows())
        store.upsert("c", rows())
        assert client.calls == ["upsert", "upsert"], version


def test_a_flush_started_after_an_upsert_covers_it_for_every_process() -> None:
    name = f"group-{uuid.uuid4()}"
    store, client = lite_store(name)
    upserted = time.monotonic()
    # another process's flush started after this upsert completed, and finished
    with host_lock(name + "c", wait=1) as ledger:
        ledger.write(time.monotonic())
    store._flush_after("c", upserted)
    assert client.calls == []
    # one that started before it does not count
    with host_lock(name + "c", wait=1) as ledger:
        ledger.write(upserted - 1)
    store._flush_after("c", upserted)
    assert client.calls == ["flush"]
    with host_lock(name + "c", wait=1) as ledger:
        assert ledger.read() > upserted  # this flush is now on record for the others
