"""The README documents every setting with its real default."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    """One test for every setting, reporting every missing row or wrong default at once."""
    problems = []
    for name, field in sorted(Settings.model_fields.items()):
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if isinstance(default, list):
            shown = ",".join(default) or "(empty)"
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = str(default)
        # The first row naming it: the Configuration table comes before the Docker one.
        row = next((line for line in README.splitlines() if f"| `{name.upper()}` |" in line), None)
        if row is None:
            problems.append(f"{name.upper()} is not in the README")
        elif shown not in row:
            problems.append(f"{name.upper()}: the README does not show the default {shown}")
    assert problems == [], "\n".join(problems)


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
