"""The lock agrees with pyproject.toml: uv.lock resolves exactly today's dependencies, and
requirements/*.txt, which pip installs (`make install`, CI, the Docker image), are its
exports. Both checks are uv's own and run offline: they need no index."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = {"requirements/runtime.txt": False, "requirements/dev.txt": True}  # has dev extra?


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never"}
    return subprocess.run(
        [find_uv_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_uv_lock_matches_pyproject() -> None:
    result = uv("lock", "--check")
    assert result.returncode == 0, f"uv.lock is out of date, run `make lock`:\n{result.stderr}"


@pytest.mark.parametrize("path", EXPORTS)
def test_requirements_are_exported_from_uv_lock(path: str) -> None:
    """Each file is what the command in its header prints from uv.lock today."""
    text = (ROOT / path).read_text()
    command = shlex.split(text.splitlines()[1].lstrip("#"))
    assert command[:3] == ["uv", "export", "--frozen"], command
    assert ("--extra" in command) == EXPORTS[path], f"{path}: {command}"
    result = uv(*command[1:])
    assert result.returncode == 0, result.stderr
    assert result.stdout == text, f"{path} differs from uv.lock: run `make lock`"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # A new dependency (a name no real edit will add, so the case never goes stale).
        ("dependencies = [\n", 'dependencies = [\n    "hybridq-lock-probe>=1.0",\n'),
        ('    "orjson>=3.10",\n', ""),  # a dependency dropped
        ('"pytest>=8"', '"pytest>=99"'),  # a bound the pinned version does not meet
    ],
)
def test_the_lock_check_catches_an_edit_of_pyproject(tmp_path: Path, old: str, new: str) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert uv("lock", "--check", cwd=tmp_path).returncode == 0  # the copy as such is fine
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert old in pyproject, f"the edit's anchor {old!r} is not in pyproject.toml any more"
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(old, new, 1))
    result = uv("lock", "--check", cwd=tmp_path)
    assert result.returncode != 0, result.stderr
