"""The README documents every setting with its real default."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings, SettingsError, setting_fields

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    """One test for every setting, reporting every missing row or wrong default at once."""
    problems = []
    fields = setting_fields()
    assert len(fields) > 50 and all(field.description for field in fields)
    for name, default, _description in sorted(fields):
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
    with pytest.raises(SettingsError, match="worker_concurrency"):
        Settings(worker_concurrency=0)
    with pytest.raises(SettingsError, match="database_url"):
        Settings(database_url="mysql://x")


def test_comma_separated_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDLER_MODULES", "a.b, c.d")
    monkeypatch.setenv("WORKER_QUEUES", "email-sending,webhook:process")
    s = Settings()
    assert s.handler_modules == ["a.b", "c.d"]
    assert s.worker_queues == ["email-sending", "webhook:process"]


def test_variables_are_read_case_insensitively_with_env_file_below_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_SNOOZES=7\nworker_concurrency=9\nNOT_A_SETTING=1\n")
    monkeypatch.setenv("max_snoozes", "8")
    monkeypatch.setenv("EMBED_WORKER", "off")
    monkeypatch.setenv("REDIS_CLUSTER", "Yes")
    s = Settings(redis_prefix="t:")
    assert (s.max_snoozes, s.worker_concurrency) == (8, 9)  # the environment wins over .env
    assert (s.embed_worker, s.redis_cluster, s.redis_prefix) == (False, True, "t:")
    assert Settings(max_snoozes=3).max_snoozes == 3  # an override wins over both


def test_json_settings_and_masked_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    monkeypatch.setenv("WEBHOOK_SECRETS", json.dumps({"crm": secret}))
    monkeypatch.setenv("ENCRYPTION_KEYS", "k1, k2")
    monkeypatch.setenv("ENCRYPTED_FIELDS", '{"email-sending": ["email_data"]}')
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2")
    s = Settings()
    assert s.webhook_secrets["crm"].get_secret_value() == secret
    assert s.encrypted_fields == {"email-sending": ["email_data"]}
    assert s.encryption_keys == ["k1", "k2"]
    assert s.smtp_password.get_secret_value() == "hunter2"
    assert secret not in repr(s) and "hunter2" not in repr(s) and "hunter2" not in str(s)
    monkeypatch.setenv("WEBHOOK_SECRETS", '{"crm": ')
    with pytest.raises(SettingsError, match=r"WEBHOOK_SECRETS .*not valid JSON"):
        Settings()


def test_checks_name_the_variable_and_keep_their_messages() -> None:
    cases: dict[str, dict[str, Any]] = {
        "WORKER_CONCURRENCY": {"worker_concurrency": "0"},
        "SMTP_TLS": {"smtp_tls": "ssl"},
        "EMAIL_FROM.*with a domain": {"email_from": "nobody"},
        "REDIS_URL.*must start with redis://": {"redis_url": "http://x"},
        "REDIS_SENTINELS.*'x:y' is not host:port": {"redis_sentinels": "a:1,x:y"},
        "WEBHOOK_SECRETS.*secret of endpoint 'crm'": {"webhook_secrets": {"crm": "whsec_%%%"}},
        "db_pool_min_size must not exceed": {"db_pool_min_size": 5, "db_pool_max_size": 4},
        "backoff_base must not exceed backoff_max": {"backoff_base": 9, "backoff_max": 1},
        "encrypted_fields needs encryption_keys": {"encrypted_fields": {"q": ["a"]}},
        "worker_fetch_timeout must be shorter": {"visibility_timeout": 1.0},
        "Redis Cluster takes no sentinels": {"redis_cluster": True, "redis_prefix": "{x}:"},
    }
    for message, overrides in cases.items():
        with pytest.raises(SettingsError, match=message):
            Settings(**overrides)
    with pytest.raises(TypeError, match="worker_concurency"):
        Settings(worker_concurency=5)  # type: ignore[call-arg]


def test_replace_is_a_validated_copy() -> None:
    s = Settings(webhook_allowed_hosts=["Hooks.Example", "LOCALHOST"])
    assert s.webhook_allowed_hosts == ["hooks.example", "localhost"]
    copy = s.replace(max_snoozes=2, worker_queues="a,b")
    assert (copy.max_snoozes, copy.worker_queues) == (2, ["a", "b"])
    assert copy.webhook_allowed_hosts == s.webhook_allowed_hosts and s.max_snoozes == 25
    with pytest.raises(SettingsError, match="MAX_SNOOZES"):
        s.replace(max_snoozes=-1)


def test_an_invalid_variable_stops_an_entrypoint_with_exit_2_naming_it() -> None:
    for module in ("app.worker", "app.migrator"):
        done = subprocess.run(
            [sys.executable, "-m", module],
            env={**os.environ, "WORKER_CONCURRENCY": "0"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "invalid settings" in done.stderr and "WORKER_CONCURRENCY" in done.stderr
