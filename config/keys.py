"""Every Redis key embedq uses, and the names kombu gives the keys embedq reads.

In one place so that an operator sharing a Redis sees what embedq keeps there (its own keys all
start with ``embedq:``, its queues with ``embedq.``) and a maintainer renames a key once. Each
module that owns a kind of record documents its layout; this one only names it.
"""

from __future__ import annotations

from kombu.transport.redis import PRIORITY_STEPS, Channel

__all__ = [
    "BELL_PREFIX",
    "COLLECTIONS",
    "DEAD_LETTERS",
    "HELD_PREFIX",
    "HOLDER",
    "HOLD_PREFIX",
    "NODES",
    "PROGRESS_SUFFIX",
    "SEQ",
    "UNACKED",
    "UNACKED_INDEX",
    "bell_key",
    "dead_letter_key",
    "embed_queue",
    "held_key",
    "hold_key",
    "job_keys",
    "job_progress_channel",
    "queue_lists",
    "reindex_jobs_key",
    "reindex_key",
    "search_queue",
    "seqs_key",
    "versions_key",
]

# -- queues (Redis lists, through kombu)


def embed_queue(model: str) -> str:
    """Queue of the batches a model's workers embed (one queue per model name)."""
    return f"embedq.embed.{model}"


def search_queue(model: str) -> str:
    """Queue of the queries a model's workers answer; separate so searches never wait behind
    a backlog of ingest batches."""
    return f"embedq.search.{model}"


#: kombu's hash of delivered, unacknowledged messages (delivery tag -> message) and its index
#: (a sorted set: tag -> delivery time). embedq's atomic take writes both.
UNACKED = Channel.unacked_key
UNACKED_INDEX = Channel.unacked_index_key


def queue_lists(queue: str) -> list[str]:
    """The lists kombu keeps a queue in, highest priority first: messages of priority step
    p > 0 wait in ``<queue><sep><p>`` (the layout of ``Channel._q_for_pri``)."""
    return [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]


# -- the broker's leases (embedq.state.broker)

#: Sorted set: node -> the Redis time (ms) its lease runs out.
NODES = "embedq:nodes"
#: Hash: delivery tag -> the node holding that message.
HOLDER = "embedq:holder"
#: One hash per node: delivery tag -> "<pid> <bytes of the message> <list it came from>".
HELD_PREFIX = "embedq:held:"
#: Set for a lease when a node finds its own lease had run out: it restores nobody meanwhile.
HOLD_PREFIX = "embedq:hold:"
#: One stream per queue, rung after each push so that idle consumers wake up.
BELL_PREFIX = "embedq:bell:"


def held_key(node: str) -> str:
    return HELD_PREFIX + node


def hold_key(node: str) -> str:
    return HOLD_PREFIX + node


def bell_key(queue: str) -> str:
    return BELL_PREFIX + queue


# -- jobs (embedq.state.jobs)


def job_keys(job_id: str) -> list[str]:
    """A job's record (hash), its done and failed batch sets and its error list."""
    base = f"embedq:job:{job_id}"
    return [base, f"{base}:done", f"{base}:failed", f"{base}:errors"]


#: Appended to a job's record key: the pub/sub channel on which its changes are announced
#: (waiters wake up on it; the Lua scripts that count batches publish there too).
PROGRESS_SUFFIX = ":progress"


def job_progress_channel(job_id: str) -> str:
    return job_keys(job_id)[0] + PROGRESS_SUFFIX


# -- dead letters (embedq.state.deadletters)

#: Sorted set: dead letter id -> when it died.
DEAD_LETTERS = "embedq:dead"


def dead_letter_key(letter_id: str) -> str:
    return f"{DEAD_LETTERS}:{letter_id}"


# -- collections and documents (embedq.state.registry, embedq.state.versions)

#: Hash: collection -> the model it was made with (JSON).
COLLECTIONS = "embedq:collections"
#: Counter behind every operation's sequence number.
SEQ = "embedq:seq"


def seqs_key(name: str) -> str:
    """The sequence numbers handed to one message that carried none (kept for its retries)."""
    return f"embedq:seqs:{name}"


def versions_key(collection: str) -> str:
    """Hash: document id -> its latest order key and the operations it replaced."""
    return f"embedq:versions:{collection}"


# -- reindex (embedq.reindex)


def reindex_key(source: str, target: str) -> str:
    """Hash: where a reindex from ``source`` into ``target`` left off."""
    return f"embedq:reindex:{source}:{target}"


def reindex_jobs_key(source: str, target: str) -> str:
    """List: the jobs that reindex has queued and not yet seen finish."""
    return reindex_key(source, target) + ":jobs"
