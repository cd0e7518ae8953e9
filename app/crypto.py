"""Encryption at rest of sensitive payload fields, per queue.

The fields named for a queue in ENCRYPTED_FIELDS are replaced, before the job is
written, by `{"$encrypted": "<Fernet token>"}`; PostgreSQL and Redis only ever hold the
token. The worker decrypts them just before the handler runs. Fernet (from the
`cryptography` package) is authenticated encryption (AES-128-CBC with HMAC-SHA256): a
token altered or made with another key fails to decrypt instead of yielding garbage.

Rotation: ENCRYPTION_KEYS is a list; the first key encrypts, every key decrypts. Put a
new key first, keep the old ones until no job encrypted with them remains.

    python -m app.crypto new-key      # prints a fresh key
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

MARKER = "$encrypted"


class DecryptionError(Exception):
    """A field could not be decrypted with any configured key."""


class PayloadCipher:
    def __init__(self, keys: list[str], fields: dict[str, list[str]]) -> None:
        self._fernet: MultiFernet | None = None
        if keys:
            # Imported only when keys are configured: it costs a worker several MiB.
            from cryptography.fernet import Fernet, MultiFernet

            try:
                self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
            except ValueError as exc:
                raise ValueError(f"ENCRYPTION_KEYS: not a Fernet key ({exc})") from None
        if fields and self._fernet is None:
            raise ValueError("ENCRYPTED_FIELDS needs ENCRYPTION_KEYS")
        self.fields = {q: tuple(f) for q, f in fields.items() if f}

    def encrypts(self, queue_name: str) -> bool:
        return queue_name in self.fields

    def encrypt(self, queue_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with this queue's sensitive fields encrypted (a new dict)."""
        names = self.fields.get(queue_name)
        if not names or self._fernet is None:
            return payload
        out = dict(payload)
        for name in names:
            if name in out:
                token = self._fernet.encrypt(orjson.dumps(out[name]))
                out[name] = {MARKER: token.decode()}
        return out

    def decrypt(self, queue_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload with every encrypted field restored (a new dict if any was)."""
        if not any(_is_encrypted(v) for v in payload.values()):
            return payload
        if self._fernet is None:
            raise DecryptionError("the payload is encrypted but ENCRYPTION_KEYS is empty")
        from cryptography.fernet import InvalidToken

        out = dict(payload)
        for name, value in payload.items():
            if _is_encrypted(value):
                try:
                    out[name] = orjson.loads(self._fernet.decrypt(value[MARKER].encode()))
                except InvalidToken:
                    raise DecryptionError(
                        f"field {name!r} cannot be decrypted with any configured key"
                    ) from None
        return out


def _is_encrypted(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARKER), str)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["new-key"]:
        from cryptography.fernet import Fernet

        print(Fernet.generate_key().decode())
        return
    print("usage: python -m app.crypto new-key", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
