"""Per-job progress kept in Redis, written by workers and read by producers.

A job is the set of batches one ``submit`` queued. Counters are idempotent: a batch is counted
once however often it is delivered (a redelivery after a crash, a requeued dead letter), because
"done" is a set of batch numbers and texts are added only when a batch first enters that set.
Every change is also published on the job's channel, so that waiters wake up at once instead
of polling (:meth:`JobTracker.watch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from embedq.config.errors import BrokerUnavailableError, JobFailedError, JobNotFoundError
from embedq.config.keys import PROGRESS_SUFFIX, job_keys, job_progress_channel

__all__ = ["COUNTERS", "JobStatus", "JobTracker"]

_MAX_ERRORS = 100

#: What a job counts, added up over its batches (see embedq.worker.batch.BatchOutcome.counters).
COUNTERS = (
    "texts_stored",
    "texts_rejected",
    "chunks_stored",
    "texts_truncated",
    "superseded",
    "deleted",
)

# Several batches at once (a worker records the batches it embedded together in one call).
# KEYS: per batch its job hash, done set, failed hash, errors list.
# ARGV: ttl, then per batch: batch, counter count, (name, value) pairs, error count, lines...
# Returns per batch 1 when it was counted now, 0 when it had been before.
_DONE = f"""
local ttl, a, counted = ARGV[1], 2, {{}}
for k = 1, #KEYS, 4 do
  local job, done, failed, errors = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local batch, counters = ARGV[a], tonumber(ARGV[a + 1])
  local lines = tonumber(ARGV[a + 2 + 2 * counters])
  local added = redis.call('SADD', done, batch)
  if added == 1 then
    for c = 0, counters - 1 do
      redis.call('HINCRBY', job, ARGV[a + 2 + 2 * c], ARGV[a + 3 + 2 * c])
    end
    redis.call('HDEL', failed, batch)
    for i = 1, lines do redis.call('RPUSH', errors, ARGV[a + 2 + 2 * counters + i]) end
    redis.call('LTRIM', errors, 0, {_MAX_ERRORS - 1})
  end
  for i = 0, 3 do redis.call('EXPIRE', KEYS[k + i], ttl) end
  redis.call('PUBLISH', job .. '{PROGRESS_SUFFIX}', batch)
  counted[#counted + 1] = added
  a = a + 3 + 2 * counters + lines
end
return counted
"""

# KEYS: job hash, done set, failed hash; ARGV: batch, reason, ttl
_FAILED = f"""
local fresh = 0
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  fresh = redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
redis.call('PUBLISH', KEYS[1] .. '{PROGRESS_SUFFIX}', ARGV[1])
return fresh
"""


@dataclass(frozen=True)
class JobStatus:
    """Progress of one job. ``total_batches`` is None until every batch has been queued."""

    job_id: str
    total_batches: int | None
    texts_total: int | None
    batches_done: int
    batches_failed: int
    texts_stored: int
    texts_rejected: int
    collection: str = ""
    #: Rows written: one per chunk (a plain text that fits the model is one chunk).
    chunks_stored: int = 0
    #: Plain texts cut to what the model reads (EMBEDQ_BATCH__OVERLONG=truncate).
    texts_truncated: int = 0
    #: Items a newer operation on the same document had already replaced (nothing written).
    superseded: int = 0
    #: Documents (or texts) deleted by id; deleting an absent one counts too.
    deleted: int = 0
    failures: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Every queued batch has an outcome (stored or failed for good)."""
        return self.total_batches is not None and (
            self.batches_done + self.batches_failed >= self.total_batches
        )

    @property
    def ok(self) -> bool:
        """Finished with every batch stored and no text rejected."""
        return self.finished and self.batches_failed == 0 and self.texts_rejected == 0

    def failure(self) -> JobFailedError | None:
        """The error of a finished job with a failed batch or a rejected text, else None."""
        if not self.finished or self.ok:
            return None
        reasons = [f"batch {b}: {why}" for b, why in sorted(self.failures.items())]
        reasons += self.errors
        return JobFailedError(
            f"{self.summary()}; first reasons: " + "; ".join(reasons[:3]), errors=reasons
        )

    def summary(self) -> str:
        total = "?" if self.total_batches is None else str(self.total_batches)
        extra = "".join(
            f", {value} {name}"
            for name, value in (
                ("deleted", self.deleted),
                ("truncated", self.texts_truncated),
                ("superseded by a newer version", self.superseded),
            )
            if value
        )
        return (
            f"job {self.job_id}: {self.batches_done}/{total} batches done, "
            f"{self.batches_failed} failed; {self.texts_stored} texts stored "
            f"({self.chunks_stored} chunks), {self.texts_rejected} rejected{extra}"
        )


class JobTracker:
    """Reads and writes job progress records in Redis."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._done = client.register_script(_DONE)
        self._failed = client.register_script(_FAILED)

    @staticmethod
    def _keys(job_id: str) -> list[str]:
        return job_keys(job_id)

    def create(
        self, job_id: str, collection: str, model: str, sealed: tuple[int, int] | None = None
    ) -> None:
        """Start the job's record; ``sealed`` = (batches, texts) when every batch is already
        queued, which also seals it in the same round trip."""
        key = self._keys(job_id)[0]
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={"collection": collection, "model": model, "created": f"{time.time():.3f}"},
        )
        if sealed is not None:
            pipe.hset(key, mapping={"total_batches": sealed[0], "texts_total": sealed[1]})
        pipe.expire(key, self._ttl)
        if sealed is not None:
            pipe.publish(job_progress_channel(job_id), "sealed")
        pipe.execute()

    def seal(self, job_id: str, total_batches: int, total_texts: int) -> None:
        """Record that every batch is queued; until then a job is never finished."""
        key = self._keys(job_id)[0]
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={"total_batches": total_batches, "texts_total": total_texts})
        pipe.expire(key, self._ttl)
        pipe.publish(job_progress_channel(job_id), "sealed")
        pipe.execute()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Callable[[float], None]]:
        """Subscribe to the job's changes; yields ``wait(seconds)``, which returns at the next
        change or after ``seconds``. Subscribe first, then read the status: no change is
        missed between the two."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(job_progress_channel(job_id))
        except redis.RedisError as exc:
            pubsub.close()
            raise BrokerUnavailableError(f"cannot watch job {job_id} in Redis: {exc}") from exc

        def wait(seconds: float) -> None:
            try:
                pubsub.get_message(timeout=seconds)
            except redis.RedisError:
                time.sleep(seconds)  # the status read that follows reports the problem

        try:
            yield wait
        finally:
            pubsub.close()

    def batch_done(
        self, job_id: str, batch: int, counters: Mapping[str, int], errors: list[str]
    ) -> bool:
        """Count a stored batch once; returns False when it had been counted before.
        ``counters`` holds what to add (names from :data:`COUNTERS`)."""
        return self.batches_done([(job_id, batch, counters, errors)])[0]

    def batches_done(
        self, done: Sequence[tuple[str, int, Mapping[str, int], list[str]]]
    ) -> list[bool]:
        """:meth:`batch_done` for several (job, batch, counters, errors) in one call: a worker
        that embedded many small batches together records them at once."""
        keys: list[str] = []
        args: list[Any] = [self._ttl]
        for job_id, batch, counters, errors in done:
            lines = errors[:_MAX_ERRORS]
            keys += self._keys(job_id)
            pairs = [item for name in COUNTERS for item in (name, int(counters.get(name, 0)))]
            args += [batch, len(COUNTERS), *pairs, len(lines), *lines]
        return [bool(added) for added in self._done(keys=keys, args=args)]

    def batch_failed(self, job_id: str, batch: int, reason: str) -> None:
        """Record a batch that failed for good (unless it was stored on an earlier delivery)."""
        self._failed(keys=self._keys(job_id)[:3], args=[batch, reason[:2000], self._ttl])

    def status(self, job_id: str) -> JobStatus:
        job_key, done_key, failed_key, errors_key = self._keys(job_id)
        pipe = self._redis.pipeline()
        pipe.hgetall(job_key)
        pipe.scard(done_key)
        pipe.hgetall(failed_key)
        pipe.lrange(errors_key, 0, -1)
        try:
            raw_job, done, raw_failed, raw_errors = pipe.execute()
        except redis.RedisError as exc:
            raise BrokerUnavailableError(f"cannot read job {job_id} from Redis: {exc}") from exc
        job = _decode_map(raw_job)
        if not job:
            raise JobNotFoundError(
                f"no job {job_id!r} in Redis: check the id, or it expired "
                "(EMBEDQ_JOBS__TTL_SECONDS)"
            )
        failed = {int(k): v for k, v in _decode_map(raw_failed).items()}
        return JobStatus(
            job_id=job_id,
            total_batches=_int_or_none(job.get("total_batches")),
            texts_total=_int_or_none(job.get("texts_total")),
            batches_done=int(done),
            batches_failed=len(failed),
            texts_stored=int(job.get("texts_stored", 0)),
            texts_rejected=int(job.get("texts_rejected", 0)),
            collection=job.get("collection", ""),
            chunks_stored=int(job.get("chunks_stored", 0)),
            texts_truncated=int(job.get("texts_truncated", 0)),
            superseded=int(job.get("superseded", 0)),
            deleted=int(job.get("deleted", 0)),
            failures=failed,
            errors=[_text(e) for e in cast(list[Any], raw_errors)],
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)
