"""Exit codes of the ``embedq`` command and how errors are printed."""

from __future__ import annotations

import sys

__all__ = ["EXIT_FAILED", "EXIT_INPUT", "EXIT_TIMEOUT", "EXIT_UNAVAILABLE", "fail"]

EXIT_FAILED, EXIT_INPUT, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 1, 2, 3, 4


def fail(exc: Exception, code: int) -> int:
    print(f"embedq: error: {exc}", file=sys.stderr)
    return code
