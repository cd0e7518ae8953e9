import pytest
from cryptography.fernet import Fernet

from app.api.auth import Authenticator, digest, parse_api_keys
from app.api.limits import json_depth_exceeds, strict_json_error
from app.crypto import DecryptionError, PayloadCipher


def test_api_keys_parse_hashed_and_plain_entries() -> None:
    keys = parse_api_keys(["a:producer:sha256:" + digest("k1").hex(), "b:admin:k2"])
    assert [(k.name, k.scope, k.plaintext) for k in keys] == [
        ("a", "producer", False),
        ("b", "admin", True),
    ]
    auth = Authenticator(keys, enabled=True)
    assert auth.identify("k1") is keys[0]
    assert auth.identify("k2") is keys[1]
    assert auth.identify("k3") is None


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("nocolons", "not name:scope:secret"),
        ("a:root:x", "scope must be one of"),
        ("a:admin:sha256:abc", "64 hex digits"),
        ("a:admin:sha256:" + "zz" * 32, "64 hex digits"),
    ],
)
def test_bad_api_keys_are_named(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_api_keys([entry])


def test_a_key_name_is_unique() -> None:
    with pytest.raises(ValueError, match="used twice"):
        parse_api_keys(["a:admin:x", "a:producer:y"])


@pytest.mark.parametrize(
    ("body", "limit", "exceeds"),
    [
        (b'{"a": [1, [2]]}', 3, False),
        (b'{"a": [1, [2]]}', 2, True),
        (b'{"s": "[[[[[[\\"[[[["}', 1, False),  # brackets and an escaped quote in a string
        (b'{"s": "a\\\\", "t": [[1]]}', 2, True),  # an escaped backslash ends the string
        (b'{"s": "a\\\\\\"[[[", "t": [1]}', 2, False),  # backslash, then escaped quote
        (b"[[[]]]", 3, False),
        (b"[[[[]]]]", 3, True),
        (b"[[],[[]],[[],[[]]]]", 4, False),
        (b"[[],[[]],[[],[[]]]]", 3, True),  # deep without 4 opening brackets in a row
        # Across the slices in which the scan lets the event loop run.
        (b"[" + b"[[]]," * 400_000 + b"[[]]" + b"]", 3, False),
        (b"[" + b"[[]]," * 400_000 + b"[[[]]]" + b"]", 3, True),
        (b"[" + b"[[]]," * 400_000 + b"[[[[]]]]" + b"]", 4, True),
    ],
)
async def test_json_depth_is_measured_outside_strings(
    body: bytes, limit: int, exceeds: bool
) -> None:
    assert await json_depth_exceeds(body, limit) is exceeds


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": [-Infinity]}',
        b'{"a": 1e400}',
        b'{"a": -1.5E+400}',
        b'{"a": 1' + b"0" * 400 + b".0}",
        b'{"s": "\\\\", "a": NaN}',  # after a string ending in an escaped backslash
    ],
)
def test_json_only_lenient_parsers_read_is_refused(body: bytes) -> None:
    assert strict_json_error(body) is not None


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1e308, "b": [1.5, -0.0, 12345678901234567890123], "c": true, "d": null}',
        b'{"NaN": "Infinity", "s": "1e400 \\" NaN"}',  # only inside strings
        b"{not json",  # invalid, but not a lenient parser's number: FastAPI's 422
    ],
)
def test_strict_json_is_not_refused(body: bytes) -> None:
    assert strict_json_error(body) is None


def test_cipher_round_trip_and_rotation() -> None:
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old = PayloadCipher([k1], {"q": ["secret"]})
    sealed = old.encrypt("q", {"secret": {"pin": 4432}, "plain": 2})
    assert sealed["plain"] == 2 and set(sealed["secret"]) == {"$encrypted"}
    assert "4432" not in str(sealed["secret"])
    assert PayloadCipher([k2, k1], {}).decrypt("q", sealed) == {
        "secret": {"pin": 4432},
        "plain": 2,
    }
    with pytest.raises(DecryptionError):
        PayloadCipher([k2], {}).decrypt("q", sealed)
    assert old.encrypt("other-queue", {"secret": 1}) == {"secret": 1}


def test_cipher_needs_keys_for_its_fields() -> None:
    with pytest.raises(ValueError, match="ENCRYPTION_KEYS"):
        PayloadCipher([], {"q": ["x"]})
    with pytest.raises(ValueError, match="not a Fernet key"):
        PayloadCipher(["short"], {})
