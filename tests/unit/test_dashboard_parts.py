"""Pieces of the dashboard without I/O: sessions (expiry, a replaced key), percentiles
from histogram buckets, chart scales, the actions a status allows, payload display."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.api.auth import Authenticator, digest, parse_api_keys
from app.dashboard import session as session_module
from app.dashboard.charts import line_chart, nice_ceiling
from app.dashboard.data import allowed_actions, payload_fields
from app.dashboard.history import quantile
from app.dashboard.session import SESSION_COOKIE, Sessions


def _auth(*entries: str) -> Authenticator:
    return Authenticator(parse_api_keys(list(entries)), enabled=True)


def _cookie_from(response: Response) -> str:
    header = next(
        v.decode()
        for k, v in response.raw_headers
        if k == b"set-cookie" and v.startswith(SESSION_COOKIE.encode())
    )
    return header.split(";")[0].split("=", 1)[1]


def _request(cookie: str | None = None) -> Request:
    headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())] if cookie else []
    return Request(
        {"type": "http", "scheme": "http", "server": ("t", 80), "path": "/", "headers": headers}
    )


def _login(sessions: Sessions, key: str) -> str:
    found = sessions.identify(key)
    assert found is not None
    response = Response()
    sessions.start(_request(), response, found)
    return _cookie_from(response)


def test_a_session_holds_the_keys_name_and_scope_and_a_csrf_token() -> None:
    sessions = Sessions("s", 3600, _auth(f"ops:admin:sha256:{digest('k1').hex()}"))
    viewer = sessions.viewer(_request(_login(sessions, "k1")))
    assert viewer is not None
    assert (viewer.name, viewer.scope, viewer.actor, viewer.can_act) == (
        "ops",
        "admin",
        "key:ops",
        True,
    )
    assert sessions.csrf_ok(viewer, viewer.csrf_token)
    assert not sessions.csrf_ok(viewer, "")
    # Another session of the same key has another token.
    other = sessions.viewer(_request(_login(sessions, "k1")))
    assert other is not None and other.csrf_token != viewer.csrf_token


def test_a_session_ends_after_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions("s", 60, _auth("ops:admin:k1"))
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: 1_000_000.0)  # signed long ago
        cookie = _login(sessions, "k1")
    assert sessions.viewer(_request(cookie)) is None
    assert sessions.viewer(_request(_login(sessions, "k1"))) is not None


def test_a_session_ends_when_its_key_is_removed_replaced_or_rescoped() -> None:
    cookie = _login(Sessions("s", 3600, _auth("ops:admin:k1")), "k1")
    assert Sessions("s", 3600, _auth("ops:admin:k1")).viewer(_request(cookie)) is not None
    assert Sessions("s", 3600, _auth("other:admin:k1")).viewer(_request(cookie)) is None
    assert Sessions("s", 3600, _auth("ops:admin:k2")).viewer(_request(cookie)) is None
    assert Sessions("s", 3600, _auth("ops:producer:k1")).viewer(_request(cookie)) is None
    assert Sessions("another secret", 3600, _auth("ops:admin:k1")).viewer(_request(cookie)) is None


def test_without_a_secret_each_process_signs_with_its_own(caplog: pytest.LogCaptureFixture) -> None:
    auth = _auth("ops:admin:k1")
    cookie = _login(Sessions("", 3600, auth), "k1")
    assert Sessions("", 3600, auth).viewer(_request(cookie)) is None
    assert "DASHBOARD_SECRET is not set" in caplog.text
    assert session_module.ANONYMOUS == "anonymous"


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    assert quantile({}, 0.5) is None
    assert quantile({"0.01": 10}, 0.5) == pytest.approx(0.0075)  # halfway in (0.005, 0.01]
    assert quantile({"0.005": 10}, 0.95) == pytest.approx(0.00475)
    buckets = {"0.1": 50, "1.0": 50}
    assert quantile(buckets, 0.5) == pytest.approx(0.05 + 0.05)  # the top of (0.05, 0.1]
    assert quantile(buckets, 0.95) == pytest.approx(0.5 + 0.5 * 0.9)
    assert quantile({"+Inf": 3, "0.005": 1}, 0.99) == 3600.0  # the largest finite bound


def test_chart_scales_are_round_and_gaps_break_lines() -> None:
    assert nice_ceiling(0, 4) == 4
    assert nice_ceiling(7, 4) == 8
    assert nice_ceiling(10, 4) == 20
    assert nice_ceiling(130, 4) == 200
    assert nice_ceiling(0.0031, 0.004) == pytest.approx(0.004)
    assert nice_ceiling(0.24, 0.004) == pytest.approx(0.4)
    chart = line_chart(
        "t",
        [0, 60, 120, 180, 240],
        [("a", "s-a", [1.0, 2.0, None, 4.0, None])],
        fmt=str,
        x_every=2,
        summarize=lambda vs: "",
        floor=4,
    )
    (line,) = chart.lines
    assert len(line.segments) == 1 and len(line.segments[0].split()) == 2
    assert len(line.dots) == 1  # the lone 4.0
    assert [label for _, label in chart.y_ticks] == ["0.0", "1.0", "2.0", "3.0", "4.0"]
    assert [label for _, label in chart.x_ticks] == ["00:00", "00:02", "00:04"]


def test_actions_follow_the_api_and_encrypted_fields_stay_hidden() -> None:
    assert allowed_actions("failed") == ["replay", "discard"]
    assert allowed_actions("queued") == allowed_actions("migrated_to_redis") == ["cancel"]
    assert allowed_actions("running") == allowed_actions("completed") == []
    fields = payload_fields({"card": {"$encrypted": "gAAAA-token"}, "n": [1, {"a": "<b>"}]})
    assert [(f.name, f.encrypted) for f in fields] == [("card", True), ("n", False)]
    assert fields[0].text == ""
    assert '"<b>"' in fields[1].text
