import random

import pytest

from app.backoff import retry_delay
from app.keys import Keys, priority_level


@pytest.mark.parametrize(
    ("priority", "key"),
    [
        (0, "p:queue:email-sending:high"),
        (50, "p:queue:email-sending:high"),
        (51, "p:queue:email-sending"),
        (150, "p:queue:email-sending"),
        (151, "p:queue:email-sending:low"),
        (1000, "p:queue:email-sending:low"),
    ],
)
def test_route_uses_the_seed_thresholds_and_the_queue_prefix(priority: int, key: str) -> None:
    assert Keys("p:").route("email-sending", priority) == key


def test_fetch_order_is_every_high_list_then_normal_then_low() -> None:
    keys = Keys("")
    assert keys.fetch_order(["a", "b"]) == [
        "queue:a:high",
        "queue:b:high",
        "queue:a",
        "queue:b",
        "queue:a:low",
        "queue:b:low",
    ]


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
