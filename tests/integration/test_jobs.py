"""Job progress records in a real Redis: counted once per batch, however often delivered."""

from __future__ import annotations

import pytest
import redis

from embedq.config.errors import JobNotFoundError
from embedq.state.jobs import JobTracker
from tests.support.environment import unique

pytestmark = pytest.mark.integration


def done(stored: int, rejected: int = 0) -> dict[str, int]:
    return {"texts_stored": stored, "texts_rejected": rejected, "chunks_stored": stored}


@pytest.fixture
def tracker(redis_server: str) -> JobTracker:
    return JobTracker(redis.Redis.from_url(redis_server), ttl_seconds=60)


def test_job_finishes_when_every_batch_is_done(tracker: JobTracker) -> None:
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.batch_done(job, 0, done(10), [])
    assert not tracker.status(job).finished  # not sealed: more batches may come
    tracker.seal(job, total_batches=2, total_texts=20)
    tracker.batch_done(job, 1, done(10), [])
    status = tracker.status(job)
    assert status.finished and status.ok
    assert (status.batches_done, status.texts_stored, status.texts_total) == (2, 20, 20)


def test_redelivered_batch_is_counted_once(tracker: JobTracker) -> None:
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.seal(job, 1, 5)
    assert tracker.batch_done(job, 0, done(5, 0), [])
    assert not tracker.batch_done(job, 0, done(5, 0), [])
    assert tracker.status(job).texts_stored == 5


def test_failure_then_success_on_requeue_clears_the_failure(tracker: JobTracker) -> None:
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.seal(job, 1, 3)
    tracker.batch_failed(job, 0, "StoreUnavailableError: down")
    assert tracker.status(job).finished and not tracker.status(job).ok
    tracker.batch_done(job, 0, done(3, 0), [])
    status = tracker.status(job)
    assert status.ok and status.failures == {}


def test_failure_after_success_does_not_undo_it(tracker: JobTracker) -> None:
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.seal(job, 1, 3)
    tracker.batch_done(job, 0, done(3, 0), [])
    tracker.batch_failed(job, 0, "late duplicate delivery failed")
    assert tracker.status(job).ok


def test_rejected_items_are_reported(tracker: JobTracker) -> None:
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.seal(job, 1, 3)
    tracker.batch_done(job, 0, done(2, 1), ["batch 0 item 1: text is empty"])
    status = tracker.status(job)
    assert status.finished and not status.ok
    assert status.errors == ["batch 0 item 1: text is empty"]


def test_records_expire(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    tracker = JobTracker(client, ttl_seconds=60)
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.batch_done(job, 0, done(1, 0), [])
    assert 0 < client.ttl(f"embedq:job:{job}") <= 60
    assert 0 < client.ttl(f"embedq:job:{job}:done") <= 60


def test_unknown_job_says_so(tracker: JobTracker) -> None:
    with pytest.raises(JobNotFoundError, match="expired"):
        tracker.status("nope")


def test_every_counter_adds_up_once_and_the_summary_names_the_unusual_ones(
    tracker: JobTracker,
) -> None:
    job = unique("job")
    tracker.create(job, "c", "m")
    tracker.seal(job, 2, 5)
    counts = {"texts_stored": 3, "chunks_stored": 9, "texts_truncated": 1, "superseded": 1}
    tracker.batch_done(job, 0, counts, [])
    tracker.batch_done(job, 0, counts, [])  # redelivered: counted once
    tracker.batch_done(job, 1, {"texts_stored": 2, "deleted": 2}, [])
    status = tracker.status(job)
    assert (status.texts_stored, status.chunks_stored, status.deleted) == (5, 9, 2)
    assert (status.texts_truncated, status.superseded) == (1, 1)
    assert "(9 chunks)" in status.summary() and "2 deleted, 1 truncated" in status.summary()
