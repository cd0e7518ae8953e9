"""Settings read from the environment and validated by msgspec (not pydantic: a worker
or migrator process never loads pydantic, about 9 MiB of its memory).

A subclass of EnvSettings declares its fields as `Annotated[type, Meta(constraints,
description=...)] = default`; `Cls(**overrides)` reads `.env` (if the working directory
has one) and the environment, which wins, applies the overrides and validates the whole:
a list is read comma-separated, a dict as JSON, a bool from the usual words. Variable
names are the field names, upper case, read case-insensitively. `__post_init__` checks
what a type or a bound cannot say, raising InvalidSetting (one setting) or ValueError.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple, Self, TypeVar, cast, get_args, get_origin

import msgspec
from msgspec import Meta


class SecretStr:
    """A secret setting: hidden in repr and str (logs, tracebacks, error messages); the
    value is read with get_secret_value()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """An invalid setting (or settings that contradict each other); the message names
    the setting and its environment variable."""


class InvalidSetting(ValueError):
    """Raised by a check in __post_init__ about one setting: SettingsError names it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class _ReadsEnvironment(msgspec.StructMeta):
    """`Cls(**overrides)` reads the environment and validates: a msgspec Struct may not
    define __init__, and its own one checks neither types nor constraints."""

    def __call__(cls, **overrides: Any) -> Any:
        settings_class = cast("type[EnvSettings]", cls)
        _check_names(settings_class, overrides)
        return _validated(settings_class, {**_environment(settings_class), **overrides})


class EnvSettings(msgspec.Struct, kw_only=True, metaclass=_ReadsEnvironment):
    def __post_init__(self) -> None:
        """Checks beyond types and bounds: subclasses extend it (msgspec runs it after
        the fields are set, and reports what it raises as a validation error)."""

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`, validated as a whole (the environment is not read)."""
        _check_names(type(self), changes)
        return _validated(type(self), {**msgspec.structs.asdict(self), **changes})


class SettingField(NamedTuple):
    name: str  # the environment variable is name.upper()
    default: object
    description: str


def setting_fields(cls: type[EnvSettings]) -> list[SettingField]:
    """Every setting of `cls` with its default and description."""
    found = []
    for field in msgspec.structs.fields(cls):
        default = field.default
        if field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        meta = [m for m in get_args(field.type)[1:] if isinstance(m, Meta)]
        found.append(SettingField(field.name, default, (meta[0].description or "") if meta else ""))
    return found


# Spellings of a boolean environment variable (the ones pydantic-settings accepted).
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}
_ERROR_PATH = re.compile(r" - at `\$\.(\w+)(.*)`$")
_S = TypeVar("_S", bound=EnvSettings)


def _environment(cls: type[EnvSettings]) -> dict[str, object]:
    """The settings present in `.env` (if the working directory has one), then in the
    environment, which wins; names are case-insensitive, other variables are ignored."""
    found: dict[str, object] = {}
    sources: list[Mapping[str, str | None]] = []
    if os.path.isfile(".env"):
        from dotenv import dotenv_values

        sources.append(dotenv_values(".env"))
    sources.append(os.environ)
    fields = set(cls.__struct_fields__)
    for source in sources:
        for key, value in source.items():
            if value is not None and key.lower() in fields:
                found[key.lower()] = value
    return found


def _from_text(kind: Any, value: object) -> object:
    """A setting given as text (an environment variable, or an override spelled like
    one): a list is comma-separated, a dict is JSON, a bool takes the usual words."""
    if not isinstance(value, str):
        return value
    origin = get_origin(kind)
    if origin is list:
        return [part.strip() for part in value.split(",") if part.strip()]
    if origin is dict:
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"is not valid JSON: {exc}") from None
    if kind is bool and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return value


def _check_names(cls: type[EnvSettings], given: Mapping[str, object]) -> None:
    unknown = sorted(set(given) - set(cls.__struct_fields__))
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(unknown)}")


def _validated(cls: type[_S], values: dict[str, object]) -> _S:
    kinds = {f.name: f.type for f in msgspec.structs.fields(cls)}
    decoded: dict[str, object] = {}
    for name, value in values.items():
        kind = kinds[name]
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        try:
            decoded[name] = _from_text(kind, value)
        except ValueError as exc:
            raise SettingsError(f"{name.upper()} ({name}): {exc}") from None
    try:
        return msgspec.convert(decoded, cls, strict=False, dec_hook=_decode_secret)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__
        if isinstance(cause, InvalidSetting):
            raise SettingsError(f"{cause.name.upper()} ({cause.name}): {cause}") from None
        message = str(exc)
        path = _ERROR_PATH.search(message)
        if path is None:  # a check of several settings together
            raise SettingsError(message) from None
        name, where = path.groups()
        raise SettingsError(f"{name.upper()} ({name}{where}): {message[: path.start()]}") from None


def _decode_secret(kind: type, value: object) -> object:
    if kind is SecretStr:
        if isinstance(value, SecretStr):
            return value
        if isinstance(value, str):
            return SecretStr(value)
        raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
    raise NotImplementedError(kind)
