"""``embedq dead-letters``: list, show, requeue and drop dead letters."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from embedq.config.errors import (
    InvalidInputError,
    JobNotFoundError,
)
from embedq.producer.producer import EmbeddingProducer
from embedq.state.deadletters import DeadLetter

if TYPE_CHECKING:
    pass

__all__ = ["dead_letters"]


def dead_letters(producer: EmbeddingProducer, args: argparse.Namespace) -> int:
    store = producer.dead_letters
    if args.action == "list":
        letters = store.list(args.limit)
        if args.json:
            print(json.dumps([_letter_summary(letter) for letter in letters], ensure_ascii=False))
            return 0
        print(f"{store.count()} dead letters" + (f", newest {len(letters)}:" if letters else ""))
        for letter in letters:
            where = f" job {letter.job_id} batch {letter.batch}" if letter.job_id else ""
            print(
                f"{letter.id}  {letter.when_iso()}  {letter.kind:<15}{where}  {letter.reason[:120]}"
            )
        return 0
    if args.action == "requeue":
        body = None
        if args.body is not None:
            try:
                body = json.loads(args.body.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"{args.body}: not a readable JSON file ({exc})") from None
        job = producer.requeue(args.letter_id, body)
        print(f"requeued as job {job.id}", file=sys.stderr)
        print(job.id)
        if args.wait:
            job.wait(timeout=args.timeout)
            print(job.status().summary(), file=sys.stderr)
        return 0
    found = store.get(args.letter_id)
    if found is None:
        raise JobNotFoundError(
            f"no dead letter {args.letter_id!r} (see `embedq dead-letters list`)"
        )
    if args.action == "drop":
        store.remove(found.id)
        print(f"dropped {found.id}")
        return 0
    if args.body:
        print(json.dumps(found.body, ensure_ascii=False, indent=2))
        return 0
    record = _letter_summary(found) | {"body": found.body, "raw_base64": found.raw}
    print(json.dumps(record, ensure_ascii=False, indent=2))
    return 0


def _letter_summary(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "kind": letter.kind,
        "when": letter.when_iso(),
        "reason": letter.reason,
        "task": letter.task,
        "queue": letter.queue,
        "job_id": letter.job_id,
        "batch": letter.batch,
        "size": letter.size,
        "requeueable": letter.requeueable,
    }
