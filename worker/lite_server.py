"""Milvus Lite's gRPC server as embedq runs it (``embedq standalone``, the tests, the benchmark).

Run as a script (``python worker/lite_server.py server --data-dir D --port P``), so that it
imports nothing of embedq. Two changes to ``milvus-lite server``:

- SIGTERM (docker stop, systemd, a supervisor) gets the same graceful stop as Ctrl-C: Milvus
  Lite closes its files only on KeyboardInterrupt, and loses recent writes when killed.
- pymilvus pings its connections every 10 s, idle or not, while gRPC servers by default refuse
  pings more often than every 5 minutes without data: after a few, Milvus Lite answered
  GOAWAY "too_many_pings" and clients lost their connection mid-run. This server accepts them.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import grpc

# What pymilvus's channels send (keepalive_time_ms 10000, permit_without_calls).
_KEEPALIVE_ACCEPTED = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
]


def _stop(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    make_server = grpc.server

    def server(*args: Any, options: Any = None, **kwargs: Any) -> Any:
        return make_server(*args, options=[*(options or []), *_KEEPALIVE_ACCEPTED], **kwargs)

    grpc.server = server
    signal.signal(signal.SIGTERM, _stop)
    from milvus_lite.cmdline import main as milvus_lite

    sys.argv[0] = "milvus-lite"
    milvus_lite()


if __name__ == "__main__":
    main()
