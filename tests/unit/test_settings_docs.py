"""The README documents every setting with its real default."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_with_its_default(name: str) -> None:
    field = Settings.model_fields[name]
    default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    row = next((line for line in README.splitlines() if f"| `{name.upper()}` |" in line), None)
    assert row is not None, f"{name.upper()} is not documented in README.md"
    if isinstance(default, list):
        shown = ",".join(default) or "(empty)"
    elif isinstance(default, bool):
        shown = str(default).lower()
    else:
        shown = str(default)
    assert shown in row, f"README shows a wrong default for {name.upper()}: {row}"


def test_invalid_settings_name_the_setting() -> None:
    with pytest.raises(ValidationError, match="worker_concurrency"):
        Settings(worker_concurrency=0)
    with pytest.raises(ValidationError, match="database_url"):
        Settings(database_url="mysql://x")


def test_comma_separated_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDLER_MODULES", "a.b, c.d")
    monkeypatch.setenv("WORKER_QUEUES", "email-sending,webhook:process")
    s = Settings()
    assert s.handler_modules == ["a.b", "c.d"]
    assert s.worker_queues == ["email-sending", "webhook:process"]
