import random

import pytest

from app.backoff import retry_delay
from app.keys import Keys, priority_level


@pytest.mark.parametrize(
    ("priority", "key"),
    [
        (0, "p:queue:{email-sending}:high"),
        (50, "p:queue:{email-sending}:high"),
        (51, "p:queue:{email-sending}:normal"),
        (150, "p:queue:{email-sending}:normal"),
        (151, "p:queue:{email-sending}:low"),
        (1000, "p:queue:{email-sending}:low"),
    ],
)
def test_route_uses_the_seed_thresholds_and_the_queue_prefix(priority: int, key: str) -> None:
    assert Keys("p:").route("email-sending", priority) == key


@pytest.mark.parametrize(
    "names",
    [
        ("X", "X:high"),
        ("X", "X:low"),
        ("X", "X:normal"),
        ("a}", "a"),
        ("{a}", "a"),
        ("a%3A", "a:"),
        ("x}:high", "x"),
        ("é", "%C3%A9"),
    ],
)
def test_no_queue_name_reaches_another_queues_keys(names: tuple[str, str]) -> None:
    keys = Keys("p:")
    a, b = names
    mine = {*keys.queue_lists(a), keys.inflight(a), keys.wake_marker(a)}
    theirs = {*keys.queue_lists(b), keys.inflight(b), keys.wake_marker(b)}
    assert not mine & theirs


def test_a_queue_keys_share_one_cluster_hash_tag() -> None:
    keys = Keys("p:")
    for name in ("webhook:process", "a{b}c", "日本"):
        tags = {
            k[k.index("{") + 1 : k.index("}")]
            for k in (*keys.queue_lists(name), keys.inflight(name), keys.wake_marker(name))
        }
        assert len(tags) == 1
        assert "{" not in tags.pop()


def test_priority_level_boundaries() -> None:
    assert [priority_level(p) for p in (50, 51, 150, 151)] == ["high", "normal", "normal", "low"]


def test_backoff_doubles_from_the_base_without_jitter() -> None:
    delays = [retry_delay(a, base=2, cap=3600, jitter=0) for a in range(1, 6)]
    assert delays == [2, 4, 8, 16, 32]


def test_backoff_is_capped_even_with_jitter_and_huge_attempts() -> None:
    rng = random.Random(1)
    for attempt in (20, 100, 10_000):
        assert retry_delay(attempt, base=2, cap=60, jitter=0.5, rng=rng) <= 60


def test_backoff_jitter_spreads_within_the_fraction() -> None:
    rng = random.Random(7)
    values = {retry_delay(3, base=2, cap=3600, jitter=0.1, rng=rng) for _ in range(200)}
    assert min(values) >= 8 * 0.9
    assert max(values) <= 8 * 1.1
    assert len(values) > 100  # really spread, not a constant


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        retry_delay(0)
