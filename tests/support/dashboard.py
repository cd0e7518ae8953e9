"""Driving the dashboard over HTTP as a browser would: log in through the form, read the
CSRF token from the page, post forms."""

from __future__ import annotations

import re

import httpx

from app.api.auth import digest

ADMIN_KEY = "dash-admin-key-1"
PRODUCER_KEY = "dash-producer-key-2"
API_KEYS = [
    f"ops:admin:sha256:{digest(ADMIN_KEY).hex()}",
    f"billing:producer:sha256:{digest(PRODUCER_KEY).hex()}",
]


def hidden(html: str, name: str) -> str:
    """The value of the first hidden input `name` in a page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no hidden input {name!r} in the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, key: str) -> str:
    """Log in with `key` through the form; returns the session's CSRF token."""
    page = await client.get("/dashboard/login")
    assert page.status_code == 200, page.text
    response = await client.post(
        "/dashboard/login",
        data={
            "login_token": hidden(page.text, "login_token"),
            "api_key": key,
            "next": "/dashboard",
        },
    )
    assert response.status_code == 303, response.text
    overview = await client.get("/dashboard")
    assert overview.status_code == 200, overview.text
    return hidden(overview.text, "csrf_token")
