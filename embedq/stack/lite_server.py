"""Milvus Lite's gRPC server as embedq runs it (``embedq standalone``, the tests, the benchmark).

Run as ``python -m embedq.stack.lite_server server --data-dir D --port P``. Three changes to
``milvus-lite server``:

- Writes take turns. Milvus Lite serves each call on a thread of a pool, but a collection's
  write path (its write-ahead log, its memtable, its flush) has no lock: two upserts at once
  interleave their bytes in the log, which then fails to replay after a crash (the rows of every
  write since the last flush are lost), and a flush beside another one can return before its
  rows are on disk. With writes serialized, every acknowledged write is in the log before the
  call returns, and survives a kill of this process without a flush
  (``tests/integration/test_faults.py``). Reads stay concurrent. The version it reports ends
  in the suffix given with ``--version-suffix`` (``embedq.config.names.SERIALIZED``, passed
  by the command that starts it, so that this process imports nothing of embedq's settings),
  which tells embedq's workers that they need not flush
  (``EMBEDQ_MILVUS__FLUSH=auto``).
- A collection is opened once. Milvus Lite opens a collection on its first use and caches it,
  without a lock: after a restart, calls arriving together (every worker reconnects at once)
  each opened their own instance of the same collection, with the same write-ahead log file,
  manifest and background compaction, and what one instance wrote or compacted the other could
  overwrite or delete at its next flush. Opening takes a lock of its own (reads stay
  concurrent once the collection is open).
- SIGTERM (docker stop, systemd, a supervisor) gets the same graceful stop as Ctrl-C, and that
  stop waits for a write in progress before it closes the database.
- pymilvus pings its connections every 10 s, idle or not, while gRPC servers by default refuse
  pings more often than every 5 minutes without data: after a few, Milvus Lite answered
  GOAWAY "too_many_pings" and clients lost their connection mid-run. This server accepts them.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import grpc

# What pymilvus's channels send (keepalive_time_ms 10000, permit_without_calls).
_KEEPALIVE_ACCEPTED = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
]

# The calls that only read; every other call of the Milvus service changes state and takes the
# write lock.
_READS = frozenset({
    "Connect", "GetVersion", "CheckHealth", "HasCollection", "DescribeCollection",
    "ShowCollections", "Query", "Search", "HybridSearch", "DescribeIndex", "GetLoadingProgress",
    "GetLoadState", "HasPartition", "ShowPartitions", "GetFlushState",
    "GetCollectionStatistics", "GetPartitionStatistics", "ListDatabases", "DescribeDatabase",
    "DescribeAlias", "ListAliases", "GetCompactionState",
})  # fmt: skip


def _stop(*_: Any) -> None:
    raise KeyboardInterrupt


def _serialized(method: Callable[..., Any], lock: threading.Lock) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, request: Any, context: Any) -> Any:
        with lock:
            return method(self, request, context)

    return call


def serialize_writes(servicer: Any, database: Any, version_suffix: str = "") -> None:
    """Make the state-changing calls of Milvus Lite's servicer class, and the closing of its
    database, take one lock in turn; make opening a collection take another."""
    lock = threading.Lock()
    for name, method in list(vars(servicer).items()):
        if name[:1].isupper() and callable(method) and name not in _READS:
            setattr(servicer, name, _serialized(method, lock))
    # On Ctrl-C Milvus Lite asks gRPC to stop (which does not wait) and closes the database at
    # once: a write still running could put its row in the memtable after the final flush and
    # be acknowledged, then lost. Closing under the lock lets it finish first; a write after
    # the close fails, and its client retries it on the next server.
    close = database.close

    def close_after_writes(self: Any) -> None:
        with lock:
            close(self)

    database.close = close_after_writes
    get_collection = database.get_collection
    opening = threading.Lock()

    def get_collection_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        with opening:
            return get_collection(self, *args, **kwargs)

    database.get_collection = get_collection_once
    version = servicer.GetVersion

    def get_version(self: Any, request: Any, context: Any) -> Any:
        reply = version(self, request, context)
        reply.version += version_suffix
        return reply

    servicer.GetVersion = get_version


def main() -> None:
    make_server = grpc.server

    def server(*args: Any, options: Any = None, **kwargs: Any) -> Any:
        return make_server(*args, options=[*(options or []), *_KEEPALIVE_ACCEPTED], **kwargs)

    grpc.server = server
    signal.signal(signal.SIGTERM, _stop)
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.cmdline import main as milvus_lite
    from milvus_lite.db import MilvusLite

    # Ours, before milvus-lite's own command line reads the rest.
    suffix = ""
    if "--version-suffix" in sys.argv:
        at = sys.argv.index("--version-suffix")
        suffix = sys.argv[at + 1]
        del sys.argv[at : at + 2]
    serialize_writes(MilvusServicer, MilvusLite, suffix)
    sys.argv[0] = "milvus-lite"
    milvus_lite()


if __name__ == "__main__":
    main()
