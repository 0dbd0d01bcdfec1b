"""``embedq worker`` and ``embedq flower``: hand over to Celery with embedq's settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from embedq.config.contract import served_queues
from embedq.config.errors import InvalidInputError
from embedq.config.settings import Settings

__all__ = ["run_flower", "run_worker"]


def run_flower(settings: Settings) -> int:
    """``celery -A embedq.worker flower`` on the configured address, with basic auth passed through
    the environment (a command-line argument would show the password in `ps`)."""
    from embedq.stack.services import flower_command

    argv, extra_env = flower_command(settings)
    env = dict(os.environ) | extra_env
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover - execve does not return


def run_worker(settings: Settings, celery_args: Sequence[str]) -> int:
    """``embedq worker`` = ``celery -A embedq.worker worker`` with embedq's queues and
    concurrency."""
    argv = ["celery", "-A", "embedq.worker", "worker", "--loglevel", settings.worker.log_level]
    extra = list(celery_args)
    # --log-format is ours, not Celery's: it travels to the worker as its setting.
    for flag in ("--log-format=json", "--log-format=text"):
        if flag in extra:
            extra.remove(flag)
            os.environ["EMBEDQ_WORKER__LOG_FORMAT"] = flag.split("=")[1]
    if "--log-format" in extra:
        at = extra.index("--log-format")
        value = extra[at + 1] if at + 1 < len(extra) else ""
        if value not in ("json", "text"):
            raise InvalidInputError("--log-format takes json or text")
        os.environ["EMBEDQ_WORKER__LOG_FORMAT"] = value
        del extra[at : at + 2]
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in extra):
        argv += ["-Q", ",".join(served_queues(settings))]
    if settings.worker.concurrency and not any(
        a.startswith(("-c", "--concurrency")) for a in extra
    ):
        argv += ["--concurrency", str(settings.worker.concurrency)]
    argv += extra
    sys.stdout.flush()
    os.execvp(sys.executable, [sys.executable, "-m", *argv])  # noqa: S606 - fixed argv, no shell
    return 0  # pragma: no cover - execvp does not return
