"""The version register's scripts on a real Redis: sequence numbers and claims."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from embedq.state.versions import Claim, Claimed, OrderKey, VersionRegister, Written
from tests.support.environment import unique

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server)
    yield connection
    connection.close()


def test_sequence_numbers_only_grow_even_when_redis_loses_the_counter(
    client: redis.Redis,
) -> None:
    register = VersionRegister(client)
    first = register.next_seqs(100)
    second = register.next_seqs(1)
    assert second >= first + 100  # the next block starts after this one (or at the clock)
    # at least the server's clock in microseconds: a Redis restarted empty starts above
    assert first >= int(time.time() * 1_000_000) - 5_000_000
    client.delete("embedq:seq")
    assert register.next_seqs(1) > second


def test_concurrent_producers_never_share_a_sequence_number(redis_server: str) -> None:
    def draw(_: int) -> list[int]:
        register = VersionRegister(redis.Redis.from_url(redis_server))
        out = []
        for _ in range(200):
            first = register.next_seqs(3)
            out += [first, first + 1, first + 2]
        return out

    with ThreadPoolExecutor(4) as pool:
        numbers = [n for part in pool.map(draw, range(4)) for n in part]
    assert len(set(numbers)) == len(numbers) == 2400


def test_claims_say_first_newer_again_and_stale(client: redis.Redis) -> None:
    register, collection = VersionRegister(client), unique("c")
    seq = 1_764_547_200_123_457  # as large as real ones: exact through Lua's doubles
    k = OrderKey(5.0, seq)
    assert register.claim(collection, [("d", k, 3)]) == [Claimed(Claim.FIRST)]
    assert register.claim(collection, [("d", k, 2)]) == [Claimed(Claim.AGAIN)]
    assert register.claim(collection, [("d", OrderKey(5.0, seq - 1), 1)]) == [Claimed(Claim.STALE)]
    assert register.claim(collection, [("d", OrderKey(4.5, seq + 9), 1)]) == [Claimed(Claim.STALE)]
    # a newer operation gets the one it replaces, with its chunk count (the greater of its
    # attempts'), to delete
    newer = register.claim(collection, [("d", OrderKey(5.0, seq + 1), 4)])
    assert newer == [Claimed(Claim.NEWER, (Written(seq, 3),))]
    newest = register.claim(collection, [("d", OrderKey(5.25, 1), 0)])  # a delete
    assert newest == [Claimed(Claim.NEWER, (Written(seq, 3), Written(seq + 1, 4)))]
    assert register.latest(collection, ["d", "e"]) == [OrderKey(5.25, 1), None]
    # deleted rows are settled: a retry of the claim no longer lists them
    register.settle(collection, [("d", [seq])])
    again = register.claim(collection, [("d", OrderKey(5.25, 1), 0)])
    assert again == [Claimed(Claim.AGAIN, (Written(seq + 1, 4),))]
    # another collection is another register
    assert register.claim(unique("c"), [("d", OrderKey(0, 1), 1)]) == [Claimed(Claim.FIRST)]


def test_claims_in_one_call_apply_in_order(client: redis.Redis) -> None:
    register, collection = VersionRegister(client), unique("c")
    claims = register.claim(
        collection, [("d", OrderKey(1, 1), 1), ("d", OrderKey(3, 3), 1), ("d", OrderKey(2, 2), 1)]
    )
    assert [c.claim for c in claims] == [Claim.FIRST, Claim.NEWER, Claim.STALE]


def test_racing_claims_leave_the_greatest_key_and_every_other_pending(redis_server: str) -> None:
    collection = unique("c")
    keys = [OrderKey(float(random.randrange(50)), n) for n in range(1, 801)]
    random.Random(1).shuffle(keys)

    def claim(part: list[OrderKey]) -> list[Claimed]:
        register = VersionRegister(redis.Redis.from_url(redis_server))
        return [register.claim(collection, [("d", key, 1)])[0] for key in part]

    with ThreadPoolExecutor(4) as pool:
        claims = [c for part in pool.map(claim, [keys[i::4] for i in range(4)]) for c in part]
    register = VersionRegister(redis.Redis.from_url(redis_server))
    assert register.latest(collection, ["d"]) == [max(keys)]
    assert [c.claim for c in claims].count(Claim.FIRST) == 1
    # every operation that claimed and was replaced is pending: its rows get deleted
    order = [key for i in range(4) for key in keys[i::4]]
    live = {k.seq for k, c in zip(order, claims, strict=True) if c.claim.live}
    final = register.claim(collection, [("d", max(keys), 1)])[0]
    assert {w.seq for w in final.pending} == live - {max(keys).seq}
