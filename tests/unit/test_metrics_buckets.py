"""Histogram buckets kept in Redis render as Prometheus's cumulative buckets."""

import math

from app.metrics import BUCKET_LABELS, HistogramData, bucket_of


def test_a_value_lands_in_the_smallest_bucket_that_holds_it() -> None:
    assert bucket_of(0.0) == "0.005"
    assert bucket_of(0.005) == "0.005"
    assert bucket_of(0.0051) == "0.01"
    assert bucket_of(7.0) == "10.0"
    assert bucket_of(10_000.0) == "+Inf"
    assert bucket_of(math.nan) == "+Inf"


def test_cumulative_buckets_end_with_inf_holding_every_observation() -> None:
    data = HistogramData(buckets={"0.01": 2, "1.0": 3, "+Inf": 1}, sum=12.5, count=6)
    cumulative = dict(data.cumulative())
    assert list(cumulative) == list(BUCKET_LABELS)
    assert cumulative["0.005"] == 0
    assert cumulative["0.01"] == 2
    assert cumulative["0.5"] == 2
    assert cumulative["1.0"] == 5
    assert cumulative["+Inf"] == 6 == data.count
