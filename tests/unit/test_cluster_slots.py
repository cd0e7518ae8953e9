"""Redis Cluster layout: every key a script touches together is in one hash slot, and a
worker's queues are grouped by slot (app.worker.cluster_fetch)."""

from __future__ import annotations

import hashlib

import pytest

from app.cluster import slot_of
from app.keys import Keys
from app.settings import Settings
from app.worker.cluster_fetch import slot_groups, split


@pytest.mark.parametrize("name", ["email-sending", "a}", "{a}", "é", "x:high", "webhooks"])
def test_every_key_of_a_queue_is_in_the_slot_of_its_hash_tag(name: str) -> None:
    keys = Keys("hq:", cluster=True)
    own = {
        *keys.queue_lists(name),
        keys.inflight(name),
        keys.wake_marker(name),
        keys.queue_epoch(name),
    }
    assert {slot_of(k) for k in own} == {slot_of(keys.wake_marker(name))}


def test_the_keys_of_one_circuit_breaker_script_share_a_slot_in_cluster_mode() -> None:
    keys = Keys("hq:", cluster=True)
    assert slot_of(keys.circuit("smtp", "mx.example.com:25")) == slot_of(keys.circuits_index())
    # A single server keeps its key names.
    assert Keys("hq:").circuit("smtp", "h:25") == "hq:circuit:smtp:h:25"
    assert Keys("hq:").circuits_index() == "hq:circuits"


def test_queues_are_grouped_by_slot_in_the_order_given() -> None:
    keys = Keys("hq:", cluster=True)
    # Two names whose tags hash to the same slot share a group (CRC16 spreads short
    # sequential names without collisions, so take names of hashes).
    names = [hashlib.sha1(str(i).encode()).hexdigest()[:12] for i in range(2000)]
    by_slot: dict[int, list[str]] = {}
    for n in names:
        by_slot.setdefault(slot_of(keys.wake_marker(n)), []).append(n)
    pair = next(qs[:2] for qs in by_slot.values() if len(qs) >= 2)
    other = next(
        n for n in names if slot_of(keys.wake_marker(n)) != slot_of(keys.wake_marker(pair[0]))
    )

    groups = slot_groups(keys, [pair[0], other, pair[1]])

    assert [g.queues for g in groups] == [[pair[0], pair[1]], [other]]
    first = groups[0]
    assert first.markers == [keys.wake_marker(pair[0]), keys.wake_marker(pair[1])]
    assert first.script_keys == [
        *keys.queue_lists(pair[0]),
        keys.inflight(pair[0]),
        keys.wake_marker(pair[0]),
        *keys.queue_lists(pair[1]),
        keys.inflight(pair[1]),
        keys.wake_marker(pair[1]),
    ]
    assert len({slot_of(k) for k in first.script_keys}) == 1


@pytest.mark.parametrize(
    ("count", "parts", "shares"),
    [(10, 3, [4, 3, 3]), (2, 3, [1, 1, 0]), (0, 2, [0, 0]), (6, 1, [6]), (7, 7, [1] * 7)],
)
def test_free_slots_are_split_in_equal_shares(count: int, parts: int, shares: list[int]) -> None:
    assert split(count, parts) == shares
    assert sum(split(count, parts)) == count


def test_cluster_mode_from_the_flag_or_the_url() -> None:
    assert not Settings(handler_modules=[]).cluster_mode
    flag = Settings(handler_modules=[], redis_cluster=True, redis_url="redis://h:7000/0")
    assert flag.cluster_mode and flag.redis_node_url == "redis://h:7000/0"
    url = Settings(handler_modules=[], redis_url="rediss+cluster://u:p@h:7000/0")
    assert url.cluster_mode and url.redis_node_url == "rediss://u:p@h:7000/0"
    with pytest.raises(ValueError, match="braces"):
        Settings(handler_modules=[], redis_cluster=True, redis_prefix="{hq}:")
