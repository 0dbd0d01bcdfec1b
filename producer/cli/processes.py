"""``embedq worker`` and ``embedq flower``: hand over to Celery with embedq's settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from config.contract import embed_queue, search_queue
from config.errors import (
    ConfigError,
)
from config.settings import Settings

if TYPE_CHECKING:
    pass

__all__ = ["run_flower", "run_worker"]


def run_flower(settings: Settings) -> int:
    """``celery -A worker flower`` on the configured address, with basic auth passed through
    the environment (a command-line argument would show the password in `ps`)."""
    flower = settings.flower
    env = dict(os.environ)
    if flower.user is not None and flower.password is not None:
        env["FLOWER_BASIC_AUTH"] = f"{flower.user}:{flower.password.get_secret_value()}"
    elif flower.address not in {"127.0.0.1", "localhost", "::1"}:
        raise ConfigError(
            f"EMBEDQ_FLOWER__ADDRESS={flower.address} exposes Flower beyond this machine: set "
            "EMBEDQ_FLOWER__USER and EMBEDQ_FLOWER__PASSWORD for basic auth"
        )
    argv = [sys.executable, "-m", "celery", "-A", "worker", "flower",
            f"--address={flower.address}", f"--port={flower.port}"]  # fmt: skip
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover - execve does not return


def run_worker(settings: Settings, celery_args: Sequence[str]) -> int:
    """``embedq worker`` = ``celery -A worker worker`` with embedq's queues and concurrency."""
    argv = ["celery", "-A", "worker", "worker", "--loglevel", settings.worker.log_level]
    extra = list(celery_args)
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in extra):
        name = settings.model.name
        argv += ["-Q", f"{embed_queue(name)},{search_queue(name)}"]
    if settings.worker.concurrency and not any(
        a.startswith(("-c", "--concurrency")) for a in extra
    ):
        argv += ["--concurrency", str(settings.worker.concurrency)]
    argv += extra
    sys.stdout.flush()
    os.execvp(sys.executable, [sys.executable, "-m", *argv])  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover - execvp does not return
