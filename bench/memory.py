"""Memory figures: worker pool RSS from /proc, the model's size on disk, and the peak RSS of an
``embedq ingest`` process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stack import Stack
from embedq.stack.services import child_pids

__all__ = ["IngestMemory", "PoolMemory", "dir_size", "ingest_peak_rss", "pool_memory", "rss_mb"]

_MB = 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (the fork's copy-on-write image) split among the
    processes sharing them, so summing PSS over a pool does not count them twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_mb(pid: int) -> float:
    return round(_status_kb(pid, "VmRSS") / 1024, 1)


@dataclass(frozen=True)
class PoolMemory:
    """RSS of a worker pool: its parent and each prefork child (each holds one model)."""

    parent_rss_mb: float
    children_rss_mb: list[float]
    children_pss_mb: list[float]

    @property
    def children_sum_mb(self) -> float:
        return round(sum(self.children_rss_mb), 1)

    @property
    def child_max_mb(self) -> float:
        return max(self.children_rss_mb, default=0.0)

    def to_json(self) -> dict[str, object]:
        return {
            "parent_rss_mb": self.parent_rss_mb,
            "children_rss_mb": self.children_rss_mb,
            "children_pss_mb": self.children_pss_mb,
            "children_rss_sum_mb": self.children_sum_mb,
            "child_rss_max_mb": self.child_max_mb,
        }


def pool_memory(parent: int) -> PoolMemory:
    children = child_pids(parent)
    return PoolMemory(
        parent_rss_mb=rss_mb(parent),
        children_rss_mb=[rss_mb(pid) for pid in children],
        children_pss_mb=[round(_pss_kb(pid) / 1024, 1) for pid in children],
    )


def dir_size(path: Path) -> int:
    """Bytes of every file under ``path`` (a model folder), following no links."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@dataclass(frozen=True)
class IngestMemory:
    texts: int
    file_mb: float
    seconds: float
    peak_rss_mb: float
    exit_code: int

    def to_json(self) -> dict[str, object]:
        return {
            "texts": self.texts,
            "file_mb": self.file_mb,
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "exit_code": self.exit_code,
        }


#: Runs argv[2:] as its child and writes the child's exit code and ru_maxrss (kB) to argv[1].
#: Why a launcher: Linux carries the RSS high-water mark of the process that forks over an exec
#: into the child's ru_maxrss, so a child of this (large) process would report at least our
#: RSS. The launcher is small when it forks, so the figure it reads is the ingest's own.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "maxrss_kb": usage.ru_maxrss}, out)
sys.exit(code)
"""


def ingest_peak_rss(stack: Stack, path: Path, texts: int, collection: str) -> IngestMemory:
    """Run ``embedq ingest FILE --collection C`` and read its peak RSS from the kernel
    (``ru_maxrss`` of that one process, via ``wait4`` in a small launcher: exact, where polling
    /proc could miss a short peak)."""
    report = stack.root / f"ingest-{texts}.rusage.json"
    argv = [sys.executable, "-c", _LAUNCHER, str(report)]
    argv += [sys.executable, "-m", "embedq", "ingest", str(path)]
    argv += ["--collection", collection, "--quiet"]
    log = stack.root / "logs" / f"ingest-{texts}.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.run(
            argv, env=stack.env(), cwd=stack.root, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"embedq ingest exited with {code}:\n{log.read_text(errors='replace')}")
    usage = json.loads(report.read_text())
    return IngestMemory(
        texts=texts,
        file_mb=round(path.stat().st_size / _MB, 1),
        seconds=round(seconds, 2),
        # Linux reports ru_maxrss in kilobytes.
        peak_rss_mb=round(int(usage["maxrss_kb"]) / 1024, 1),
        exit_code=int(usage["code"]),
    )
