"""Where things are, fresh names, and the environment of the processes a test starts."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "docs" / "corpus"


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def python() -> str:
    return sys.executable


def process_env(redis_url: str, milvus_uri: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child process (worker, CLI) pointed at the test servers: the
    developer's EMBEDQ_* variables removed, the hub off limits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDQ_")}
    env.update(
        EMBEDQ_REDIS__URL=redis_url,
        EMBEDQ_MILVUS__URI=milvus_uri,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        # Off unless a test asks: nodes of one host would compete for the default port.
        EMBEDQ_METRICS__PORT="0",
    )
    env.update(extra)
    return env
