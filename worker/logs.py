"""Worker logs: the usual text lines, or one JSON object per line for log shippers.

Each stored batch logs one line with its job id, batch number, counts, seconds and outcome;
in JSON those are fields of their own.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import signals

from embedq.config.settings import Settings

__all__ = ["BATCH_FIELDS", "JsonFormatter", "install"]

#: Fields a batch log line carries (``logger.info(..., extra=...)``).
BATCH_FIELDS = ("job_id", "batch", "texts", "stored", "rejected", "seconds", "outcome", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        data.update({f: getattr(record, f) for f in BATCH_FIELDS if hasattr(record, f)})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def install(settings: Settings) -> None:
    """Use JSON lines when ``EMBEDQ_WORKER__LOG_FORMAT=json`` (``embedq worker --log-format
    json``): Celery sets up its handlers, then this swaps their formatter."""
    if settings.worker.log_format != "json":
        return

    def use_json(logger: logging.Logger | None = None, **_: Any) -> None:
        for handler in (logger or logging.getLogger()).handlers:
            handler.setFormatter(JsonFormatter())

    signals.after_setup_logger.connect(use_json, weak=False)
    signals.after_setup_task_logger.connect(use_json, weak=False)
