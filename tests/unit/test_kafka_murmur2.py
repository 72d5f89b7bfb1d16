"""The bus's key hash places every key where Kafka's default partitioner (and aiokafka's) does."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as reference

from agent_service.adapters.kafka_bus import murmur2


def test_murmur2_equals_kafkas_on_every_length_and_byte() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 41) for _ in range(25)]
    keys += [b"", b"\x00", b"\xff\xff\xff", b"b123456-98765:1", "décision:é".encode(), bytes(range(256)) * 2]  # past the cached word counts
    for key in keys:
        assert murmur2(key) == reference(key), key


def test_murmur2_many_equals_one_by_one() -> None:
    from agent_service.adapters.kafka_bus import murmur2_many

    rng = random.Random(8)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 41) for _ in range(rng.choice((1, 20, 40)))]
    keys += [f"b{k:07d}-98765:{k % 3}".encode() for k in range(3000)] + [b"\xff" * 17] * 30
    rng.shuffle(keys)
    assert murmur2_many(keys) == [reference(key) for key in keys]
    assert murmur2_many([]) == []
