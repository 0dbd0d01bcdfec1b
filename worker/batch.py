"""What a worker does with one message (or a group of small ones), independent of Celery:
check each item, chunk and encode the good ones, and apply each operation so that the last
one submitted for a document wins, whatever order workers take them in.

How the last operation wins
---------------------------
Every operation carries an order key ``(version, seq)`` (see :mod:`embedq.state.versions`). Each row
it writes has the primary key ``row_key(document, seq, chunk number)``, so the rows of two
operations never overwrite each other, and the rows of any operation are known from its seq and
chunk count alone: nothing in the protocol reads the store. An operation

1. *claims* its document in the Redis register, with its key and chunk count. If a greater key
   is claimed already it is **stale**: it writes nothing, and deletes the rows an earlier
   attempt of its own may have written. Otherwise the register moves the operation it replaces
   to the document's *pending* list and hands back that list;
2. writes its chunks (upsert: a redelivery rewrites the same rows);
3. deletes the rows of every pending operation, and tells the register they are gone;
4. reads the register again: if a greater key was claimed meanwhile, it deletes its own rows.

Why that converges on the greatest key W: W's rows are only deleted by W (no one else's step 1,
3 or 4 names W's seq while W is the latest). Every other operation X that claimed is pending
once superseded, so its rows are deleted in some step 3, unless X wrote them after that delete:
then X's own step 4, which follows its write, sees the newer claim and deletes them. An
operation that never claimed writes nothing. An attempt cut short by a crash or a failure is
retried with the same key and does it all again. Collections in the texts layout (created
before documents) keep their old semantics: a row per text keyed by id, the last write to
arrive wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from embedq.config.contract import (
    BatchMessage,
    Hit,
    SearchMessage,
    check_id,
    check_metadata,
    check_text,
    check_version,
    derive_id,
)
from embedq.config.errors import (
    InvalidInputError,
    ModelMismatchError,
    StoreRejectedError,
    StoreUnavailableError,
)
from embedq.config.settings import BatchSettings
from embedq.state.versions import Claim, Claimed, OrderKey, Written
from embedq.worker.chunker import Chunker, Span, fit_bytes
from embedq.worker.encoder import Encoder, Vectors
from embedq.worker.store import Rows, VectorStore

__all__ = ["BatchOutcome", "Embedder", "Register", "row_key"]


class Register(Protocol):
    """The version register (:class:`embedq.state.versions.VersionRegister` on Redis)."""

    def next_seqs(self, count: int) -> int: ...
    def seqs_for(self, name: str, count: int) -> int: ...
    def claim(self, collection: str, ops: Sequence[tuple[str, OrderKey, int]]) -> list[Claimed]: ...
    def settle(self, collection: str, done: Sequence[tuple[str, Sequence[int]]]) -> None: ...
    def latest(self, collection: str, docs: Sequence[str]) -> list[OrderKey | None]: ...


@dataclass
class BatchOutcome:
    """What became of one message's items.

    ``stored`` items were applied (written, deleted, or found replaced by a newer operation on
    their document: ``superseded``); ``rejected`` maps item positions to the reason."""

    stored: int = 0
    rejected: dict[int, str] = field(default_factory=dict)
    chunks: int = 0
    truncated: int = 0
    superseded: int = 0
    deleted: int = 0
    #: Items stored with something left out, by position (a chunk the model cannot read).
    notes: dict[int, str] = field(default_factory=dict)
    #: Time spent encoding and writing, on the first outcome of a coalesced group only.
    encode_seconds: float = 0.0
    upsert_seconds: float = 0.0

    def error_lines(self, job_id: str, batch: int) -> list[str]:
        lines = [f"job {job_id} batch {batch} item {i}: {why}" for i, why in self.rejected.items()]
        return lines + [f"job {job_id} batch {batch} item {i}: {n}" for i, n in self.notes.items()]

    def counters(self) -> dict[str, int]:
        """The counts a job's progress record adds up."""
        return {
            "texts_stored": self.stored,
            "texts_rejected": len(self.rejected),
            "chunks_stored": self.chunks,
            "texts_truncated": self.truncated,
            "superseded": self.superseded,
            "deleted": self.deleted,
        }

    def rejected_message(self, message: BatchMessage) -> dict[str, Any]:
        """A batch message of the rejected items only, as they arrived: what a dead letter
        keeps so that they can be fixed and requeued."""
        picks = sorted(self.rejected)
        body: dict[str, Any] = message.model_dump(exclude={"ids", "metadata", "versions", "seq"})
        body["texts"] = [message.texts[i] for i in picks] if not message.delete else []
        for name in ("ids", "metadata", "versions"):
            column = getattr(message, name)
            if column is not None:
                body[name] = [column[i] for i in picks]
        return body


def row_key(doc: str, seq: int, chunk: int) -> str:
    """Primary key of a chunk row: distinct for every operation, the same on a redelivery."""
    return hashlib.blake2b(f"{doc}\x00{seq}\x00{chunk}".encode(), digest_size=12).hexdigest()


@dataclass(eq=False)
class _Op:
    """One item of a message: a write (``spans``) or a delete (``spans`` None)."""

    message: int
    item: int
    collection: str
    doc: str
    key: OrderKey
    metadata: dict[str, Any]
    spans: list[Span] | None
    truncated: bool = False
    claimed: Claimed | None = None
    #: The chunks it writes (those that encoded to something), by number, and where their
    #: vectors are in the block its part was encoded into.
    written: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    #: Its rows are written (its part's upsert returned).
    landed: bool = False
    #: The same operation delivered twice in one group (same document and seq): the first.
    twin: _Op | None = None

    @property
    def claim(self) -> Claim | None:
        return None if self.claimed is None else self.claimed.claim

    @property
    def chunks(self) -> int:
        return len(self.spans or ())

    def own_pks(self) -> list[str]:
        """The keys of every row this operation may have written, in any attempt."""
        return [row_key(self.doc, self.key.seq, c) for c in range(self.chunks)]


#: Operations are encoded and written in up to this many parts, of at least _MIN_CHUNKS chunks.
_PARTS, _MIN_CHUNKS = 4, 64


class Embedder:
    """Applies messages of one model: its encoder and chunker, the store and the register."""

    def __init__(
        self,
        encoder: Encoder,
        chunker: Chunker,
        store: VectorStore,
        register: Register,
        limits: BatchSettings,
        max_length: int | None,
        pause_before_write: float = 0.0,
        late_write: float = 0.0,
    ) -> None:
        self.encoder = encoder
        self.chunker = chunker
        self.store = store
        self.register = register
        self.limits = limits
        self.max_length = max_length
        #: Test-only fault point (EMBEDQ_WORKER__PAUSE_BEFORE_WRITE): a worker slowed between
        #: its claims and its writes, so that a newer operation overtakes it.
        self.pause_before_write = pause_before_write
        #: How long a task interrupted by its soft time limit still waits for a write it
        #: started (half the time left before the hard limit), so that the write rarely lands
        #: after the retry's clean-up.
        self.late_write = late_write

    # -- the whole batch ------------------------------------------------------------------

    def run(self, messages: Sequence[BatchMessage]) -> list[BatchOutcome]:
        """Apply every valid item of several messages (small batches coalesced by the worker)
        with few encode and write calls; one outcome per message, in order. An invalid item is
        rejected on its own; a store or Redis error fails them all (nothing is acknowledged, so
        every message is retried, and the retry finishes what this attempt started)."""
        for message in messages:
            self._check_model(message.model)
        outcomes = [BatchOutcome() for _ in messages]
        ops = [op for m, message in enumerate(messages) for op in self._ops(m, message, outcomes)]
        collections = sorted({op.collection for op in ops})
        layouts = {c: self.store.prepare(c, self.encoder.info) for c in collections}
        legacy = [op for op in ops if layouts[op.collection] == "texts"]
        ops = [op for op in ops if layouts[op.collection] == "documents"]
        timing = (0.0, 0.0)
        if legacy:
            timing = self._apply_texts_layout(legacy, outcomes)
        if ops:
            timing = _add(timing, self._apply(ops, outcomes))
        outcomes[0].encode_seconds, outcomes[0].upsert_seconds = timing
        return outcomes

    def _apply(self, ops: list[_Op], outcomes: list[BatchOutcome]) -> tuple[float, float]:
        ops, twins = _distinct(ops)
        writes = [op for op in ops if op.spans is not None]
        deletes = [op for op in ops if op.spans is None]
        try:
            timing = self._write(writes, outcomes)
        except StoreRejectedError:
            # Milvus refused a part for good (the batch goes to the dead letters): what the
            # parts written so far replaced goes now, as it would have had the rest gone well.
            # A transient failure is left to the retry, which finishes all of it.
            landed = [op for op in writes if op.landed]
            with contextlib.suppress(Exception):
                self._clean_up(landed)
                self._recheck(landed)
            raise
        for collection, group in _by_collection(deletes).items():
            self._claim(collection, group)
        self._clean_up(ops)
        self._recheck(writes)
        for op in ops + twins:
            outcome, first = outcomes[op.message], op.twin or op
            if first.item in outcomes[first.message].rejected:
                outcome.rejected[op.item] = outcomes[first.message].rejected[first.item]
                continue
            outcome.stored += 1
            if first.claim is Claim.STALE:
                outcome.superseded += 1
            elif first.spans is None:
                outcome.deleted += 1
            else:
                outcome.chunks += len(first.written)
                outcome.truncated += first.truncated
        return timing

    # -- checking -------------------------------------------------------------------------

    def _check_model(self, name: str) -> None:
        if name != self.encoder.info.name:
            raise ModelMismatchError(
                f"message asks for model {name!r} but this worker serves "
                f"{self.encoder.info.name!r}; route it to the queue of {name!r}"
            )

    def _ops(self, m: int, message: BatchMessage, outcomes: list[BatchOutcome]) -> Iterator[_Op]:
        outcome = outcomes[m]
        seq = message.seq
        if seq is None:
            # Contract 1 carried none: the batch gets its numbers once, the same on every attempt.
            seq = self.register.seqs_for(f"{message.job_id}:{message.batch}", message.size)
        seen: dict[str, int] = {}
        found: dict[int, _Op] = {}
        for i in range(message.size):
            try:
                op = self._op(m, i, message, seq + i)
            except InvalidInputError as exc:
                outcome.rejected[i] = str(exc)
                continue
            if op.doc in seen and message.ids is not None:
                outcome.rejected[seen[op.doc]] = f"duplicate id {op.doc!r} in the same batch"
                found.pop(seen[op.doc], None)
            seen[op.doc] = i
            found[i] = op
        yield from found.values()

    def _op(self, m: int, i: int, message: BatchMessage, seq: int) -> _Op:
        given = None if message.versions is None else message.versions[i]
        version = float(seq) if given is None else check_version(given)
        key = OrderKey(version, seq)
        if message.delete:
            doc = check_id(message.ids[i] if message.ids else None, self.limits)
            return _Op(m, i, message.collection, doc, key, {}, None)
        text = check_text(message.texts[i], self.limits)
        if message.ids is None:
            doc = derive_id(message.model, text)
        else:
            doc = check_id(message.ids[i], self.limits)
        meta = check_metadata(
            None if message.metadata is None else message.metadata[i], self.limits
        )
        op = _Op(m, i, message.collection, doc, key, meta, None)
        limit = self.max_length
        if message.documents:
            op.spans = self.chunker.split(text)
        elif limit is None or self.chunker.fits(text, limit):
            op.spans = fit_bytes(Span(0, len(text), text))
        elif message.overlong == "chunk":
            op.spans = self.chunker.split(text)
        elif message.overlong == "truncate":
            op.spans, op.truncated = [self.chunker.cut(text, limit)], True
        else:
            raise InvalidInputError(
                f"text has {self.chunker.count(text)} tokens, more than model "
                f"{message.model!r} reads ({limit}); submit it as a document, or set "
                "EMBEDQ_BATCH__OVERLONG=chunk (or truncate)"
            )
        return op

    # -- writing --------------------------------------------------------------------------

    def _write(self, writes: list[_Op], outcomes: list[BatchOutcome]) -> tuple[float, float]:
        """Encode, claim and write, in parts: while one part is written to Milvus (on a
        thread, waiting on the network and the server), the next is encoded. Writes stay in
        order, one at a time."""
        total = sum(len(op.spans or ()) for op in writes)
        if not total:
            return 0.0, 0.0
        size = max(_MIN_CHUNKS, -(-total // _PARTS))
        encode_seconds = upsert_seconds = 0.0
        writing: Future[float] | None = None
        parts = list(_parts(writes, size))
        for n, part in enumerate(parts):
            started = time.perf_counter()
            vectors = self.encoder.encode([s.text for op in part for s in op.spans or ()])
            encode_seconds += time.perf_counter() - started
            kept = _keep_known(part, vectors, outcomes)
            if writing is not None:
                upsert_seconds += _finished(writing, self.late_write)
                writing = None
            for collection, group in _by_collection(kept).items():
                self._claim(collection, group)
            if self.pause_before_write:
                time.sleep(self.pause_before_write)
            live = [op for op in kept if op.claim is not Claim.STALE]
            for op in kept:
                if op.claim is Claim.STALE:
                    op.written, op.rows = [], []
            write = self._upserts(live, vectors)
            if n < len(parts) - 1:
                writing = _in_background(write)
            else:
                upsert_seconds += write()
        return encode_seconds, upsert_seconds

    def _claim(self, collection: str, ops: list[_Op]) -> None:
        claims = self.register.claim(collection, [(op.doc, op.key, op.chunks) for op in ops])
        for op, claimed in zip(ops, claims, strict=True):
            op.claimed = claimed

    def _upserts(self, ops: list[_Op], vectors: Vectors) -> Callable[[], float]:
        batches = [
            (collection, _chunk_rows(group, vectors[[r for op in group for r in op.rows]]))
            for collection, group in _by_collection(ops).items()
        ]

        def write() -> float:
            started = time.perf_counter()
            for collection, batch in batches:
                self.store.upsert(collection, batch)
            for op in ops:
                op.landed = True
            return time.perf_counter() - started

        return write

    # -- converging -----------------------------------------------------------------------

    def _clean_up(self, ops: list[_Op]) -> None:
        """Step 1 and 3 of the module's protocol: delete the rows of the operations each live
        one replaced (then settle them in the register), and rows that a stale operation may
        have written in an earlier attempt of its own."""
        for collection, group in _by_collection(ops).items():
            doomed: list[str] = []
            settled: list[tuple[str, list[int]]] = []
            for op in group:
                if op.claimed is None:
                    continue  # rejected before it claimed: it wrote nothing
                if op.claim is Claim.STALE:
                    doomed += op.own_pks()
                    continue
                pending = [w for w in op.claimed.pending if w.seq != op.key.seq]
                doomed += [pk for w in pending for pk in _pks(op.doc, w)]
                settled.append((op.doc, [w.seq for w in pending]))
            if doomed:
                self.store.delete(collection, doomed)
            self.register.settle(collection, [(doc, seqs) for doc, seqs in settled if seqs])

    def _recheck(self, writes: list[_Op]) -> None:
        """Step 4: an operation overtaken while it wrote removes its own rows."""
        for collection, group in _by_collection(
            [op for op in writes if op.written and op.claim is not None and op.claim.live]
        ).items():
            latest = self.register.latest(collection, [op.doc for op in group])
            doomed = [
                pk
                for op, key in zip(group, latest, strict=True)
                if key is not None and key > op.key
                for pk in op.own_pks()
            ]
            if doomed:
                self.store.delete(collection, doomed)

    # -- collections in the texts layout --------------------------------------------------

    def _apply_texts_layout(
        self, ops: list[_Op], outcomes: list[BatchOutcome]
    ) -> tuple[float, float]:
        """A row per text keyed by its id; the last write to arrive wins."""
        writes: list[_Op] = []
        for op in ops:
            if op.spans is None:
                self.store.delete(op.collection, [op.doc])
                outcomes[op.message].stored += 1
                outcomes[op.message].deleted += 1
            elif len(op.spans) > 1:
                outcomes[op.message].rejected[op.item] = (
                    f"this text needs {len(op.spans)} chunks but collection {op.collection!r} "
                    "holds one row per text (it was created before documents); move it with "
                    "`embedq reindex --from OLD --to NEW`, or set EMBEDQ_BATCH__OVERLONG=truncate"
                )
            else:
                writes.append(op)
        if not writes:
            return 0.0, 0.0
        started = time.perf_counter()
        vectors = self.encoder.encode([(op.spans or [])[0].text for op in writes])
        encode_seconds = time.perf_counter() - started
        kept = _keep_known(writes, vectors, outcomes)
        started = time.perf_counter()
        for collection, group in _by_collection(kept).items():
            # Rows of different messages may share an id: the last one wins, as in turn.
            chosen = list({op.doc: op for op in group}.values())
            self.store.upsert(
                collection,
                Rows(
                    ids=[op.doc for op in chosen],
                    texts=[(op.spans or [])[0].text for op in chosen],
                    metadata=[op.metadata for op in chosen],
                    vectors=np.ascontiguousarray(vectors[[op.rows[0] for op in chosen]]),
                ),
            )
            for op in group:
                outcomes[op.message].stored += 1
                outcomes[op.message].chunks += 1
                outcomes[op.message].truncated += op.truncated
        return encode_seconds, time.perf_counter() - started

    # -- search ---------------------------------------------------------------------------

    def search(self, message: SearchMessage) -> list[Hit]:
        """Encode the query with the collection's model and return its nearest rows."""
        self._check_model(message.model)
        vector = self.encoder.encode([message.query])[0]
        return self.store.search(
            message.collection,
            vector,
            message.k,
            self.encoder.info,
            message.filter,
            per_document=message.per_document,
        )


def _pks(doc: str, written: Written) -> list[str]:
    return [row_key(doc, written.seq, c) for c in range(written.chunks)]


def _add(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] + b[0], a[1] + b[1]


def _by_collection(ops: list[_Op]) -> dict[str, list[_Op]]:
    found: dict[str, list[_Op]] = {}
    for op in ops:
        found.setdefault(op.collection, []).append(op)
    return found


def _keep_known(part: list[_Op], vectors: Vectors, outcomes: list[BatchOutcome]) -> list[_Op]:
    """The operations of ``part`` with something to write, each with the chunks it keeps. A
    chunk made only of tokens the model does not know encodes to zeros, which no cosine search
    can rank: it is left out (and said so), and an item with nothing else is rejected."""
    known = np.any(vectors != 0, axis=1).tolist()
    kept: list[_Op] = []
    at = 0
    for op in part:
        count = len(op.spans or ())
        op.written = [c for c in range(count) if known[at + c]]
        op.rows = [at + c for c in op.written]
        at += count
        outcome = outcomes[op.message]
        if not op.written:
            outcome.rejected[op.item] = (
                "the model knows none of this text's tokens (it would embed to a zero vector)"
            )
            continue
        if len(op.written) < count:
            outcome.notes[op.item] = (
                f"{count - len(op.written)} of {count} chunks left out: the model knows none "
                "of their tokens"
            )
        kept.append(op)
    return kept


def _distinct(ops: list[_Op]) -> tuple[list[_Op], list[_Op]]:
    """The operations of a group, each once: a message delivered twice into one group (a
    redelivery beside its retry) carries the same operations twice; the second copies are
    returned apart, each pointing at its first. Operations of one document with different keys
    all go ahead: the register orders them."""
    first: dict[tuple[str, str, int], _Op] = {}
    unique: list[_Op] = []
    twins: list[_Op] = []
    for op in ops:
        held = first.setdefault((op.collection, op.doc, op.key.seq), op)
        if held is op:
            unique.append(op)
        else:
            op.twin = held
            twins.append(op)
    return unique, twins


def _parts(ops: list[_Op], size: int) -> Iterator[list[_Op]]:
    part: list[_Op] = []
    count = 0
    for op in ops:
        part.append(op)
        count += len(op.spans or ())
        if count >= size:
            yield part
            part, count = [], 0
    if part:
        yield part


def _chunk_rows(ops: list[_Op], vectors: Vectors) -> Rows:
    ids: list[str] = []
    texts: list[str] = []
    metadata: list[dict[str, Any]] = []
    pks: list[str] = []
    chunks: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    versions: list[float] = []
    seqs: list[int] = []
    for op in ops:
        spans = op.spans or []
        for c in op.written:
            span = spans[c]
            ids.append(op.doc)
            texts.append(span.text)
            metadata.append(op.metadata)
            pks.append(row_key(op.doc, op.key.seq, c))
            chunks.append(c)
            starts.append(span.start)
            ends.append(span.end)
            versions.append(op.key.version)
            seqs.append(op.key.seq)
    return Rows(
        ids=ids,
        texts=texts,
        metadata=metadata,
        vectors=np.ascontiguousarray(vectors),
        pks=pks,
        chunks=chunks,
        starts=starts,
        ends=ends,
        versions=versions,
        seqs=seqs,
    )


def _finished(writing: Future[float], late: float) -> float:
    """The seconds of a write, waited for. Interrupted while the write still runs (Celery's
    soft time limit arrives as an exception in the waiting thread), it is Milvus being slow,
    as when the upsert ran on the task's own thread: a transient error, retried. The write is
    given ``late`` seconds more first, so that it rarely lands after the retry has begun."""
    try:
        return writing.result()
    except Exception as exc:
        if writing.done():
            raise  # the write's own error
        wait([writing], timeout=late)
        raise StoreUnavailableError(
            f"a write to Milvus had not finished when the task was interrupted ({exc!r})"
        ) from exc


def _in_background(write: Callable[[], float]) -> Future[float]:
    """Run ``write`` on a daemon thread: a task that fails while it runs (a time limit) does not
    wait for it, and a worker process exiting is never held up by it; the retry rewrites the
    same rows."""
    future: Future[float] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(write())
        except BaseException as exc:  # handed to the waiting task, which raises it
            future.set_exception(exc)

    threading.Thread(target=run, name="embedq-write", daemon=True).start()
    return future
