"""What the figures were measured on: the machine, its load, and the versions of everything."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from embedq.stack.services import find_redis_server

__all__ = ["machine", "versions"]

_PACKAGES = (
    "embedq", "model2vec", "pymilvus", "milvus-lite", "celery", "kombu", "redis", "numpy",
    "tokenizers", "pydantic", "matplotlib",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def machine() -> dict[str, Any]:
    """CPU count and model, memory, OS, and the load average when the run started (others may
    share the machine: a high load explains noisy figures)."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_mb": _memory_mb(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        out = subprocess.run(
            [find_redis_server(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        found["redis-server"] = next(
            (w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip() or None
        )
    except Exception:  # a version string is nice to have, never required
        found["redis-server"] = None
    return found
