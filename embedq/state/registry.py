"""Which model each collection was built with, mirrored in Redis so that the producer (which
never talks to Milvus) can refuse a mismatched submit before anything is queued.

Milvus's collection properties stay the source of truth, checked by every worker; this is the
early warning.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from embedq.config.keys import COLLECTIONS

__all__ = ["CollectionRegistry"]


class CollectionRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def record(self, collection: str, model: dict[str, Any]) -> None:
        self._redis.hset(COLLECTIONS, collection, json.dumps(model, sort_keys=True))

    def get(self, collection: str) -> dict[str, Any] | None:
        raw = self._redis.hget(COLLECTIONS, collection)
        if raw is None:
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    def forget(self, collection: str) -> None:
        self._redis.hdel(COLLECTIONS, collection)
