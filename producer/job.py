"""A handle on a submitted job: its id, its progress, and waiting for it."""

from __future__ import annotations

import time

from embedq.config.errors import JobTimeoutError
from embedq.state.jobs import JobStatus, JobTracker

__all__ = ["Job"]


class Job:
    """Returned by :meth:`producer.EmbeddingProducer.submit`; also rebuilt from an id."""

    def __init__(self, job_id: str, tracker: JobTracker) -> None:
        self.id = job_id
        self._tracker = tracker

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        """Batches done / failed / total and texts stored, as workers have recorded them."""
        return self._tracker.status(self.id)

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> JobStatus:
        """Block until every batch is stored; raise if any failed or time runs out.

        Raises :class:`JobFailedError` (with the workers' reasons) when a batch failed or a
        text was rejected, and :class:`JobTimeoutError` after ``timeout`` seconds.
        """
        status = self.wait_finished(timeout, poll)
        failure = status.failure()
        if failure is not None:
            raise failure
        return status

    def wait_finished(self, timeout: float | None = None, poll: float = 0.5) -> JobStatus:
        """Block until every batch has an outcome, stored or failed; the status says which.
        Raises :class:`JobTimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._tracker.watch(self.id) as changed:
            while True:
                # A job's record exists before its first batch is queued: a missing one is a
                # wrong id or an expired job, never one that is about to appear.
                status = self.status()
                if status.finished:
                    return status
                left = poll if deadline is None else min(poll, deadline - time.monotonic())
                if left <= 0:
                    raise JobTimeoutError(
                        f"{status.summary()} after {timeout}s; are workers running (`embedq "
                        "worker`)? The job goes on: check it later with `embedq status "
                        + self.id
                        + "`"
                    )
                # Wakes up when a worker records a batch; ``poll`` bounds the wait regardless.
                changed(left)
