"""Dashboard sessions: an API key exchanged for a signed, expiring cookie, and CSRF
tokens bound to the session.

The cookie holds the key's name and scope, a random session id and a fingerprint of the
key (never the key): itsdangerous signs it with DASHBOARD_SECRET and dates it, and it is
refused after DASHBOARD_SESSION_TTL seconds, when the key is no longer configured, or
when it was replaced by another key of the same name. It is HttpOnly, SameSite=Strict,
scoped to /dashboard, and Secure when the page is served over HTTPS.

Every state-changing form carries a CSRF token, an HMAC of the session id: a request
without it, or with another session's, is refused (403). The login form has its own,
bound to a random nonce in a short-lived cookie, so that no other site can log a
browser in with a key of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from app.api.auth import ApiKey, Authenticator

log = logging.getLogger("hybridq.dashboard")

SESSION_COOKIE = "hq_dashboard"
LOGIN_COOKIE = "hq_dashboard_login"
COOKIE_PATH = "/dashboard"
LOGIN_TTL = 600  # seconds a login form stays usable
ANONYMOUS = "anonymous"  # the actor when AUTH_ENABLED is false, as in the API


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: the API key's name and scope, and the session's CSRF token."""

    name: str
    scope: str
    csrf_token: str

    @property
    def can_act(self) -> bool:
        return self.scope == "admin"

    @property
    def actor(self) -> str:
        """As the API writes it to job_logs.actor."""
        return ANONYMOUS if self.name == ANONYMOUS else f"key:{self.name}"


class Sessions:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: str, ttl: int, authenticator: Authenticator) -> None:
        if not secret:
            # Sessions then last until this process stops and are known to it alone.
            secret = secrets.token_urlsafe(32)
            log.warning(
                "DASHBOARD_SECRET is not set: dashboard sessions are signed with a random "
                "key of this process (they end at its restart and are not accepted by "
                "other API processes)"
            )
        self._key = hashlib.sha256(b"hybridq-dashboard:" + secret.encode()).digest()
        self._signer = URLSafeTimedSerializer(secret, salt="hybridq.dashboard.session")
        self.ttl = ttl
        self.auth = authenticator

    # --- tokens -------------------------------------------------------------------

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def _fingerprint(self, key: ApiKey) -> str:
        return self._mac("key", key.digest.hex())[:32]

    def csrf_token(self, session_id: str) -> str:
        return self._mac("csrf", session_id)

    # --- log in / log out -----------------------------------------------------------

    def identify(self, presented: str) -> ApiKey | None:
        """The configured key matching `presented` (None if none does)."""
        if not presented:
            return None
        return self.auth.identify(presented)

    def start(self, request: Request, response: Response, key: ApiKey | None) -> None:
        """Set the session cookie for `key` (None: auth is disabled, anonymous admin)."""
        data: dict[str, Any] = {"sid": secrets.token_urlsafe(16)}
        if key is None:
            data.update(name=ANONYMOUS, scope="admin", fp="")
        else:
            data.update(name=key.name, scope=key.scope, fp=self._fingerprint(key))
        response.set_cookie(
            SESSION_COOKIE,
            self._signer.dumps(data),
            max_age=self.ttl,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)

    def viewer(self, request: Request) -> Viewer | None:
        """The session's viewer, or None: no cookie, a bad signature, expired, or the key
        behind it is gone or changed."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._signer.loads(raw, max_age=self.ttl)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        name, scope, sid, fp = (data.get(k) for k in ("name", "scope", "sid", "fp"))
        if not all(isinstance(v, str) for v in (name, scope, sid, fp)):
            return None
        assert isinstance(name, str) and isinstance(scope, str) and isinstance(sid, str)
        if self.auth.enabled:
            key = next((k for k in self.auth.keys if k.name == name), None)
            if key is None or key.scope != scope:
                return None
            if not hmac.compare_digest(self._fingerprint(key), str(fp)):
                return None
        elif name != ANONYMOUS:
            return None
        return Viewer(name=name, scope=scope, csrf_token=self.csrf_token(sid))

    # --- the login form's own CSRF token ------------------------------------------------

    def login_form(self, request: Request) -> tuple[str, str]:
        """(nonce, token) for the login form: the nonce goes in a cookie
        (`set_login_cookie`), the token in the form."""
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        return nonce, self._mac("login", nonce)

    def set_login_cookie(self, request: Request, response: Response, nonce: str) -> None:
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_TTL,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def login_token_ok(self, request: Request, token: str) -> bool:
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not nonce or not token:
            return False
        return hmac.compare_digest(self._mac("login", nonce), token)

    def csrf_ok(self, viewer: Viewer, token: str) -> bool:
        return bool(token) and hmac.compare_digest(viewer.csrf_token, token)
