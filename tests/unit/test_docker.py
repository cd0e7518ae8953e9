"""The deployment files agree with the code: docker/Dockerfile, docker/compose.yaml,
.dockerignore and the Makefile's up/down targets.

Docker does not run where the tests run, so these are static checks of what can be
checked by reading: every command names a real module of the project, every variable
handed to the app is a real setting and the values validate, the start order waits for
health and for the migration, Redis cannot evict, secrets fail loudly when unset, the
image is multi-stage, unprivileged, health-checked and caches its dependency layer.

Each check is a function returning the problems it finds. The real files must yield
none; the `test_…catches_its_defect` tests then break a copy of the files in one way at a
time and require the check to report it, so no check passes vacuously.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import posixpath
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"

# The services built from our image and the module each one runs (`python -m <module>`).
ROLE_MODULES = {
    "migrate": "app.db.setup",
    "api": "app",
    "migrator": "app.migrator",
    "worker": "app.worker",
}
LONG_RUNNING = ("api", "migrator", "worker")
REQUIRED_SETTINGS = ("DATABASE_URL", "REDIS_URL", "HANDLER_MODULES")
# BackgroundServices.shutdown (app/runtime.py) waits SHUTDOWN_GRACE_PERIOD plus this
# long for tasks to hand unfinished jobs back; the container must not be killed sooner.
HAND_BACK_ALLOWANCE = 15.0
# On SIGTERM uvicorn lets in-flight requests finish for this long (app/__main__.py; if
# it is not set there, uvicorn waits without limit and there is nothing to compare).
_UVICORN = re.search(r"timeout_graceful_shutdown=(\d+)", (ROOT / "app/__main__.py").read_text())
UVICORN_GRACEFUL_SHUTDOWN = float(_UVICORN[1]) if _UVICORN else 0.0
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
# Values for the variables compose reads from the host, for interpolation in tests.
HOST_ENV = {
    "POSTGRES_PASSWORD": "pg-sentinel-1",
    "REDIS_PASSWORD": "redis-sentinel-2",
    "API_KEYS": "ops:admin:sha256:" + "ab" * 32,
}

Compose = dict[str, Any]


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY …
    value: str  # the rest of the logical line, continuations joined


@dataclass
class Stage:
    base: str  # after substitution of the global ARGs
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def ordered(self) -> list[Instruction]:
        return [i for s in self.stages for i in s.instructions]


def _substitute(text: str, values: Mapping[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text, flags=re.ASCII
    )


def parse_dockerfile(text: str) -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continuation lines too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = [w for w in value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], global_args), name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = value.partition("=")
                global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return Dockerfile(stages)


def exec_form(value: str) -> list[str] | None:
    """The argv of an exec-form CMD/HEALTHCHECK CMD (a JSON array), else None."""
    if not value.startswith("["):
        return None
    argv = json.loads(value)
    return [str(a) for a in argv]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for inst in stage.all("ENV"):
        for word in shlex.split(inst.value):
            key, _, val = word.partition("=")
            env[key] = val
    return env


@dataclass(frozen=True)
class Copy:
    position: int  # of the instruction in the whole file, counted from 1
    stage: Stage
    sources: list[str]
    target: str  # absolute, resolved against the WORKDIR in force


def workdir_of(stage: Stage) -> str:
    """The directory the stage's CMD starts in."""
    workdir = "/"
    for inst in stage.all("WORKDIR"):
        workdir = posixpath.join(workdir, inst.value)
    return posixpath.normpath(workdir)


def copies(df: Dockerfile) -> Iterator[Copy]:
    """Each COPY from the build context (COPY --from=<stage> is skipped)."""
    position = 0
    for stage in df.stages:
        workdir = "/"
        for inst in stage.instructions:
            position += 1
            if inst.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, inst.value)
            if inst.keyword != "COPY":
                continue
            words = shlex.split(inst.value)
            if any(w.startswith("--from") for w in words):
                continue
            args = [w for w in words if not w.startswith("--")]
            target = posixpath.join(workdir, args[-1])
            if args[-1] == ".":
                target += "/"  # a directory, like a destination ending in /
            yield Copy(position, stage, args[:-1], target)


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    include: bool  # a `!pattern` line


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?|\[[^\]]*\])", pattern):
            if part in ("**", "**/"):
                regex += "(?:.*/)?" if part == "**/" else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            elif part.startswith("["):
                regex += "[^" + part[2:] if part.startswith("[!") else part
            else:
                regex += re.escape(part)
        rules.append(IgnoreRule(re.compile(regex), include))
    return rules


def ignored(rules: list[IgnoreRule], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for rule in rules:
        if any(rule.pattern.fullmatch(p) for p in prefixes):
            result = not rule.include
    return result


_INTERPOLATION = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.DOTALL)


class UnsetVariable(Exception):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (`$$`, `$V`, `${V}`, `${V:-d}`, `${V:?m}` …)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m[1]:
            return "$"
        if m[3]:
            return env.get(m[3], "")
        parsed = _BRACED.fullmatch(m[2])
        if parsed is None:
            raise ValueError(f"cannot interpolate {m[0]}")
        name, op, arg = parsed.groups()
        val = env.get(name)
        if op in (":?", "?") and (val is None or (op == ":?" and not val)):
            raise UnsetVariable(f"{name}: {arg}")
        if op == ":-":
            return val or arg
        if op == "-":
            return arg if val is None else val
        if op == ":+":
            return arg if val else ""
        if op == "+":
            return "" if val is None else arg
        return val or ""

    return _INTERPOLATION.sub(one, value)


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)
    elif isinstance(value, str):
        yield value


def argv_of(command: Any) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` spelling
        pairs = [str(e).partition("=") for e in env]
        return {key: value for key, _, value in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def duration(text: str) -> float:
    """Compose durations: 90s, 1m30s, 1h, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------- helpers


def module_problem(module: str) -> str | None:
    """None if `python -m module` runs project code, else why it does not."""
    if module.split(".")[0] != "app":
        return f"{module} is not a module of the project (app.*)"
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        return f"{module} is not importable"
    if spec.submodule_search_locations is not None:
        main = importlib.util.find_spec(f"{module}.__main__")
        if main is None:
            return f"{module} is a package without __main__: python -m {module} fails"
    if not Path(spec.origin).resolve().is_relative_to(ROOT / "app"):
        return f"{module} resolves outside app/ ({spec.origin}), which the image copies"
    return None


def python_module(argv: list[str]) -> str | None:
    if len(argv) >= 3 and re.fullmatch(r"python(3(\.\d+)?)?", argv[0]) and argv[1] == "-m":
        return argv[2]
    return None


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def app_get_paths() -> set[str]:
    """The paths the API answers GET on (from its OpenAPI schema: FastAPI no longer
    lists included routers' paths in app.routes)."""
    paths: dict[str, dict[str, Any]] = create_app(Settings(auth_enabled=False)).openapi()["paths"]
    return {path for path, ops in paths.items() if "get" in ops}


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_stage_problems(df: Dockerfile) -> list[str]:
    problems = []
    if len(df.stages) < 2:
        problems.append("the Dockerfile is not multi-stage")
    if not any(s.name == "builder" for s in df.stages[:-1]):
        problems.append("no `FROM … AS builder` stage before the final one")
    for stage in df.stages:
        if not re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", stage.base):
            problems.append(f"stage {stage.name}: base {stage.base} is not python 3.11 slim")
    return problems


def dockerfile_user_problems(df: Dockerfile) -> list[str]:
    user = df.final.last("USER")
    if user is None:
        return ["the final stage runs as root: no USER"]
    name = user.value.split(":")[0]
    if name in ("root", "0"):
        return [f"USER {user.value} is root"]
    return []


def dockerfile_env_problems(df: Dockerfile) -> list[str]:
    env = env_of(df.final)
    return [
        f"ENV {k}=1 missing in the final stage"
        for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")
        if env.get(k) != "1"
    ]


def dockerfile_cmd_problems(df: Dockerfile) -> list[str]:
    cmd = df.final.last("CMD")
    argv = exec_form(cmd.value) if cmd else None
    if argv is None:
        return ["no exec-form CMD (a JSON array, so SIGTERM reaches python)"]
    module = python_module(argv)
    if module != "app":
        return [f"CMD runs {argv}, not the API (python -m app)"]
    problems = [p for p in [module_problem(module)] if p]
    if option(argv, "--host") != "0.0.0.0":
        problems.append("CMD does not listen on 0.0.0.0: unreachable from other containers")
    return problems


def dockerfile_healthcheck_problems(df: Dockerfile) -> list[str]:
    check = df.final.last("HEALTHCHECK")
    if check is None:
        return ["no HEALTHCHECK in the final stage"]
    m = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", check.value)
    argv = exec_form(m[2]) if m else None
    if argv is None or argv[:2] != ["python", "-c"] or len(argv) != 3:
        return [f"HEALTHCHECK is not an exec-form `python -c …`: {check.value}"]
    code = argv[2]
    try:
        compile(code, "<HEALTHCHECK>", "exec")
    except SyntaxError as exc:
        return [f"HEALTHCHECK code does not compile: {exc}"]
    problems = []
    if "urllib" not in code:
        problems.append("HEALTHCHECK does not use urllib (slim has no curl)")
    url = re.search(r"https?://[^'\"\s]+", code)
    cmd = df.final.last("CMD")
    port = option(exec_form(cmd.value) or [], "--port") if cmd else None
    if url is None:
        problems.append("HEALTHCHECK requests no URL")
    else:
        parts = urlsplit(url[0])
        if parts.path not in app_get_paths() or parts.path != "/health":
            problems.append(f"HEALTHCHECK requests {parts.path}, not the API's GET /health")
        if str(parts.port) != port:
            problems.append(f"HEALTHCHECK port {parts.port} is not the CMD's --port {port}")
    return problems


def dockerfile_layer_problems(df: Dockerfile) -> list[str]:
    """Dependencies are installed from pyproject.toml alone, before any code is copied."""
    ordered = df.ordered()
    installs = [
        n for n, i in enumerate(ordered, 1) if i.keyword == "RUN" and "pip install" in i.value
    ]
    if not installs:
        return ["no RUN … pip install"]
    install = installs[0]
    problems = []
    early = [c.sources for c in copies(df) if c.position < install]
    if not early:
        problems.append("pyproject.toml is not copied before the dependencies are installed")
    for srcs in early:
        if srcs != ["pyproject.toml"]:
            problems.append(f"COPY {' '.join(srcs)} before the dependency install busts its cache")
    code = [c.position for c in copies(df) if any(s.rstrip("/") == "app" for s in c.sources)]
    if not code or min(code) < install:
        problems.append("app/ is not copied after the dependency install")
    return problems


def dockerfile_copy_problems(df: Dockerfile, rules: list[IgnoreRule]) -> list[str]:
    """What the image needs reaches it: sources exist and pass .dockerignore, and
    alembic.ini and alembic/ land beside app/ (app/db/setup.py looks for them there),
    in a directory `python -m` searches."""
    problems = []
    placed: dict[str, str] = {}
    for cp in copies(df):
        for src in cp.sources:
            path = ROOT / src
            if not path.exists():
                problems.append(f"COPY source {src} does not exist")
                continue
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                if "__pycache__" not in rel and ignored(rules, rel):
                    problems.append(f"COPY {src}: {rel} is excluded by .dockerignore")
            target = cp.target
            if path.is_file() and target.endswith("/"):
                target += path.name  # a file copied into a directory keeps its name
            if cp.stage is df.final:
                placed[src.rstrip("/")] = posixpath.normpath(target)
    needed = ("app", "alembic", "alembic.ini")
    missing = [n for n in needed if n not in placed]
    if missing:
        return [*problems, f"the final stage does not copy {', '.join(missing)}"]
    homes = {posixpath.dirname(placed[n]) for n in needed}
    if len(homes) != 1:
        problems.append(f"app/, alembic/ and alembic.ini are not copied side by side: {placed}")
        return problems
    home = homes.pop()
    pythonpath = env_of(df.final).get("PYTHONPATH", "").split(":")
    if home not in pythonpath and workdir_of(df.final) != home:
        problems.append(f"{home} is neither the WORKDIR nor on PYTHONPATH: -m app fails")
    return problems


def dockerignore_problems(rules: list[IgnoreRule]) -> list[str]:
    must_exclude = [".env", ".venv/bin/python", ".git/HEAD", "tests/unit/test_docker.py"]
    must_exclude += ["app/__pycache__/main.cpython-311.pyc"]
    return [
        f".dockerignore lets {p} into the build context"
        for p in must_exclude
        if not ignored(rules, p)
    ]


# --------------------------------------------------------------------------- compose


def compose_app_service_problems(compose: Compose) -> list[str]:
    services = compose.get("services", {})
    built = set()
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        context_dir = (COMPOSE.parent / context).resolve()
        if context_dir != ROOT or (context_dir / dockerfile).resolve() != DOCKERFILE:
            return [f"{name} is not built from the repository root with docker/Dockerfile"]
        built.add(name)
    if built != set(ROLE_MODULES):
        return [f"services built from our image: {sorted(built)}, expected {sorted(ROLE_MODULES)}"]
    images = {services[n].get("image") for n in built}
    if len(images) != 1 or None in images:
        return [f"the app services do not share one image name: {images}"]
    return []


def compose_command_problems(compose: Compose, df: Dockerfile) -> list[str]:
    cmd = df.final.last("CMD")
    default = exec_form(cmd.value) if cmd else None
    problems = []
    for name, expected in ROLE_MODULES.items():
        svc = compose["services"].get(name, {})
        argv = argv_of(svc["command"]) if "command" in svc else default or []
        module = python_module(argv)
        if module is None:
            problems.append(f"{name} runs {argv}, not python -m <module>")
            continue
        if problem := module_problem(module):
            problems.append(f"{name}: {problem}")
        if module != expected:
            problems.append(f"{name} runs python -m {module}, expected python -m {expected}")
    api = compose["services"].get("api", {})
    port = option(argv_of(api.get("command") or default or []), "--port")
    published = [str(p).rsplit(":", 1)[-1] for p in api.get("ports", [])]
    if port not in published:
        problems.append(f"api listens on {port} but publishes {published}")
    return problems


def compose_redis_problems(compose: Compose) -> list[str]:
    argv = argv_of(compose["services"].get("redis", {}).get("command", []))
    options: dict[str, str] = {}  # later arguments override earlier ones in redis-server
    for flag, value in itertools.pairwise(argv):
        if flag.startswith("--"):
            options[flag[2:]] = value
    problems = []
    if options.get("appendonly") != "yes":
        problems.append("redis runs without --appendonly yes: a restart loses pushed jobs")
    if options.get("maxmemory-policy") != "noeviction":
        problems.append("redis maxmemory-policy is not noeviction: queue lists may be evicted")
    return problems


def compose_env_problems(compose: Compose) -> list[str]:
    problems = []
    fields = set(Settings.model_fields)
    for name in ROLE_MODULES:
        env = environment(compose["services"].get(name, {}))
        problems += [f"{name} does not pass {k}" for k in REQUIRED_SETTINGS if k not in env]
        for key in env:
            if key != key.upper() or key.lower() not in fields:
                problems.append(f"{name} passes {key}, which is not a setting of the app")
    return problems


def settings_problems(compose: Compose) -> list[str]:
    """Every app service's environment, interpolated, gives valid Settings (the caller
    clears the process environment)."""
    resolved = interpolate(compose, HOST_ENV)
    problems = []
    for name in ROLE_MODULES:
        env = environment(resolved["services"].get(name, {}))
        values: dict[str, Any] = {k.lower(): v for k, v in env.items()}
        try:
            settings = Settings(_env_file=None, **values)
        except ValidationError as exc:
            problems.append(f"{name}: invalid settings: {exc}")
            continue
        if name == "api" and (settings.embed_migrator or settings.embed_worker):
            problems.append("api embeds the migrator or a worker: they run as services")
    return problems


def compose_url_problems(compose: Compose) -> list[str]:
    """DATABASE_URL and REDIS_URL reach the compose services with their credentials."""
    resolved = interpolate(compose, HOST_ENV)
    services = resolved["services"]
    pg = environment(services.get("postgres", {}))
    redis_argv = argv_of(services.get("redis", {}).get("command", []))
    problems = []
    for name in ROLE_MODULES:
        env = environment(services.get(name, {}))
        db = urlsplit(env.get("DATABASE_URL", ""))
        if db.hostname != "postgres" or "postgres" not in services:
            problems.append(f"{name}: DATABASE_URL host {db.hostname} is not the postgres service")
        if (db.username, db.password) != (pg.get("POSTGRES_USER"), HOST_ENV["POSTGRES_PASSWORD"]):
            problems.append(f"{name}: DATABASE_URL credentials are not postgres's")
        if db.path.lstrip("/") != pg.get("POSTGRES_DB"):
            problems.append(f"{name}: DATABASE_URL names a database other than POSTGRES_DB")
        rd = urlsplit(env.get("REDIS_URL", ""))
        if rd.hostname != "redis" or "redis" not in services:
            problems.append(f"{name}: REDIS_URL host {rd.hostname} is not the redis service")
        if option(redis_argv, "--requirepass") not in (None, rd.password):
            problems.append(f"{name}: REDIS_URL password is not redis's --requirepass")
        if rd.password != HOST_ENV["REDIS_PASSWORD"]:
            problems.append(f"{name}: REDIS_URL password does not come from REDIS_PASSWORD")
    return problems


def compose_secret_problems(compose: Compose) -> list[str]:
    """Secrets come from the host's environment as ${VAR:?message}: unset fails loudly."""
    problems = []
    seen = set()
    for text in strings_in(compose):
        for m in _INTERPOLATION.finditer(text):
            parsed = _BRACED.fullmatch(m[2]) if m[2] is not None else None
            name = m[3] or (parsed[1] if parsed else "")
            if not SECRET_NAME.search(name):
                continue
            seen.add(name)
            if parsed is None or parsed[2] != ":?" or not parsed[3].strip():
                problems.append(f"{m[0]} does not fail when unset: use ${{{name}:?message}}")
    pg = environment(compose.get("services", {}).get("postgres", {}))
    if not re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", pg.get("POSTGRES_PASSWORD", "")):
        problems.append("postgres's POSTGRES_PASSWORD is not ${POSTGRES_PASSWORD:?…}")
    if "POSTGRES_PASSWORD" not in seen:
        problems.append("POSTGRES_PASSWORD is not taken from the environment")
    try:
        interpolate(compose, {})
        problems.append("compose interpolates without any secret set")
    except UnsetVariable:
        pass
    return problems


def compose_depends_problems(compose: Compose) -> list[str]:
    services = compose["services"]
    problems = []
    wanted = {
        "migrate": {"postgres": "service_healthy"},
        **{
            n: {
                "postgres": "service_healthy",
                "redis": "service_healthy",
                "migrate": "service_completed_successfully",
            }
            for n in LONG_RUNNING
        },
    }
    for name, deps in wanted.items():
        got = services.get(name, {}).get("depends_on", {})
        if not isinstance(got, dict):
            problems.append(f"{name}: depends_on without conditions only waits for a start")
            continue
        for dep, condition in deps.items():
            actual = (got.get(dep) or {}).get("condition")
            if actual != condition:
                problems.append(f"{name} waits for {dep} with {actual}, expected {condition}")
    return problems


def compose_healthcheck_problems(compose: Compose) -> list[str]:
    services = compose["services"]
    problems = []

    def test_of(name: str) -> str:
        test = (services.get(name, {}).get("healthcheck") or {}).get("test", [])
        return " ".join(argv_of(test))

    if "pg_isready" not in test_of("postgres"):
        problems.append("postgres has no pg_isready healthcheck")
    if not re.search(r"redis-cli\b.*\bping", test_of("redis")):
        problems.append("redis has no redis-cli ping healthcheck")
    for name in ROLE_MODULES:
        check = services.get(name, {}).get("healthcheck") or {}
        if name == "api":
            if check.get("disable"):
                problems.append("api disables the image's GET /health healthcheck")
        elif not check.get("disable") and "test" not in check:
            problems.append(f"{name} inherits the image's HTTP healthcheck but serves no HTTP")
    return problems


def compose_grace_problems(compose: Compose) -> list[str]:
    problems = []
    for name in LONG_RUNNING:
        svc = compose["services"].get(name, {})
        env = environment(svc)
        grace = float(
            env.get("SHUTDOWN_GRACE_PERIOD", Settings.model_fields["shutdown_grace_period"].default)
        )
        stop = duration(str(svc.get("stop_grace_period", "10s")))  # compose's default
        if stop <= grace + HAND_BACK_ALLOWANCE:
            problems.append(
                f"{name}: stop_grace_period {stop:g}s does not exceed SHUTDOWN_GRACE_PERIOD "
                f"{grace:g}s + {HAND_BACK_ALLOWANCE:g}s: SIGKILL before jobs are handed back"
            )
        if name == "api" and stop <= UVICORN_GRACEFUL_SHUTDOWN:
            problems.append(
                f"api: stop_grace_period {stop:g}s does not exceed uvicorn's graceful "
                f"shutdown of {UVICORN_GRACEFUL_SHUTDOWN:g}s: requests cut off by SIGKILL"
            )
    return problems


def compose_scale_problems(compose: Compose) -> list[str]:
    worker = compose["services"].get("worker", {})
    replicas = (worker.get("deploy") or {}).get("replicas")
    problems = [] if replicas == 3 else [f"worker replicas: {replicas}, expected 3"]
    if "container_name" in worker:
        problems.append("worker has a container_name: it cannot be scaled")
    return problems


def compose_volume_problems(compose: Compose) -> list[str]:
    named = set(compose.get("volumes") or {})
    problems = []
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        mounts = [str(v).split(":") for v in compose["services"].get(name, {}).get("volumes", [])]
        if not any(len(m) >= 2 and m[0] in named and m[1] == path for m in mounts):
            problems.append(f"{name} keeps {path} in no named volume: data dies with it")
    return problems


# --------------------------------------------------------------------------- the tests


def load_compose(text: str) -> Compose:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine running the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


DOCKERFILE_CHECKS: dict[str, Callable[[Dockerfile], list[str]]] = {
    "stages": dockerfile_stage_problems,
    "user": dockerfile_user_problems,
    "env": dockerfile_env_problems,
    "cmd": dockerfile_cmd_problems,
    "healthcheck": dockerfile_healthcheck_problems,
    "layers": dockerfile_layer_problems,
}
COMPOSE_CHECKS: dict[str, Callable[[Compose], list[str]]] = {
    "app services": compose_app_service_problems,
    "redis": compose_redis_problems,
    "env names": compose_env_problems,
    "settings": settings_problems,
    "urls": compose_url_problems,
    "secrets": compose_secret_problems,
    "depends_on": compose_depends_problems,
    "healthchecks": compose_healthcheck_problems,
    "grace": compose_grace_problems,
    "scale": compose_scale_problems,
    "volumes": compose_volume_problems,
}


@pytest.mark.parametrize("check", DOCKERFILE_CHECKS)
def test_dockerfile(check: str) -> None:
    df = parse_dockerfile(DOCKERFILE.read_text())
    assert DOCKERFILE_CHECKS[check](df) == []


def test_dockerfile_copies_what_the_image_needs() -> None:
    df = parse_dockerfile(DOCKERFILE.read_text())
    assert dockerfile_copy_problems(df, parse_dockerignore(DOCKERIGNORE.read_text())) == []


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    assert dockerignore_problems(parse_dockerignore(DOCKERIGNORE.read_text())) == []


@pytest.mark.parametrize("check", COMPOSE_CHECKS)
@pytest.mark.usefixtures("clean_env")
def test_compose(check: str) -> None:
    assert COMPOSE_CHECKS[check](load_compose(COMPOSE.read_text())) == []


def test_compose_commands_name_real_modules() -> None:
    compose = load_compose(COMPOSE.read_text())
    df = parse_dockerfile(DOCKERFILE.read_text())
    assert compose_command_problems(compose, df) == []


def test_compose_refuses_to_start_without_each_secret() -> None:
    compose = load_compose(COMPOSE.read_text())
    for name in HOST_ENV:
        env = {k: v for k, v in HOST_ENV.items() if k != name}
        with pytest.raises(UnsetVariable, match=name):
            interpolate(compose, env)


def test_make_up_and_down_wrap_the_compose_file() -> None:
    text = MAKEFILE.read_text()
    variables = dict(re.findall(r"^(\w+)\s*:?=\s*(.*)$", text, flags=re.MULTILINE))

    def recipe(target: str) -> str:
        m = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, flags=re.MULTILINE)
        assert m is not None, f"no `{target}` target in the Makefile"
        return re.sub(r"\$\((\w+)\)", lambda v: variables.get(v[1], v[0]), m[1]).strip()

    compose_cmd = f"docker compose -f {COMPOSE.relative_to(ROOT).as_posix()}"
    assert recipe("up") == f"{compose_cmd} up -d --build"
    assert recipe("down") == f"{compose_cmd} down"


# --------------------------------------------------------------------------- each check can fail


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the mutation's anchor {old!r} is not in the file any more"
    return text.replace(old, new)


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    """A mutation setting compose[path] (dots separate keys); None deletes the key."""

    def apply(compose: Compose) -> None:
        *parents, last = path.split(".")
        node = compose
        for key in parents:
            node = node[key]
        assert last in node or value is not None, f"{path} is not in compose.yaml any more"
        if value is None:
            del node[last]
        else:
            node[last] = value

    return apply


DOCKERFILE_MUTATIONS: list[tuple[str, str, str, str]] = [
    # (check, old text, new text, expected in a problem)
    ("stages", " AS builder", " AS deps", "AS builder"),
    ("stages", "python:3.11-slim-bookworm", "python:3.12-slim-bookworm", "not python 3.11 slim"),
    ("user", "USER 10001:10001", "USER root", "is root"),
    ("user", "USER 10001:10001", "", "no USER"),
    ("env", "PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0", "PYTHONUNBUFFERED"),
    ("cmd", '"-m", "app", "--host"', '"-m", "app.api", "--host"', "not the API"),
    ("cmd", '"--host", "0.0.0.0"', '"--host", "127.0.0.1"', "0.0.0.0"),
    ("healthcheck", "/health'", "/healthz'", "not the API's GET /health"),
    ("healthcheck", "urlopen(", "urlopen((", "does not compile"),
    ("healthcheck", ":8000/health", ":8080/health", "port 8080"),
    ("healthcheck", "HEALTHCHECK --interval", "LABEL x=y\nRUN true --interval", "no HEALTHCHECK"),
    ("layers", "COPY pyproject.toml ./", "COPY . ./", "busts its cache"),
    ("layers", "COPY pyproject.toml ./", "COPY pyproject.toml ./\nCOPY app/ ./app/", "busts"),
]


@pytest.mark.parametrize(("check", "old", "new", "expected"), DOCKERFILE_MUTATIONS)
def test_each_dockerfile_check_catches_its_defect(
    check: str, old: str, new: str, expected: str
) -> None:
    broken = parse_dockerfile(_replace(DOCKERFILE.read_text(), old, new))
    problems = DOCKERFILE_CHECKS[check](broken)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("dockerfile_edit", "dockerignore_edit", "expected"),
    [
        (("COPY alembic.ini ./", "COPY alembic.ini /etc/"), None, "side by side"),
        (("COPY alembic/ ./alembic/", ""), None, "does not copy alembic"),
        (("COPY app/ ./app/", "COPY app/ ./app/\nCOPY nope.txt ./"), None, "does not exist"),
        (("PYTHONPATH=/srv/hybridq", "PYTHONPATH=/x"), None, None),  # WORKDIR suffices
        (None, ("!app/", "!app/\napp/db"), "app/db/setup.py is excluded by .dockerignore"),
        (None, ("!alembic.ini", ""), "alembic.ini is excluded"),
    ],
)
def test_the_copy_check_catches_its_defect(
    dockerfile_edit: tuple[str, str] | None,
    dockerignore_edit: tuple[str, str] | None,
    expected: str | None,
) -> None:
    dockerfile = DOCKERFILE.read_text()
    if dockerfile_edit:
        dockerfile = _replace(dockerfile, *dockerfile_edit)
    ignore = DOCKERIGNORE.read_text()
    if dockerignore_edit:
        ignore = _replace(ignore, *dockerignore_edit)
    problems = dockerfile_copy_problems(parse_dockerfile(dockerfile), parse_dockerignore(ignore))
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_the_search_path_check_catches_its_defect() -> None:
    """Code copied to /srv/hybridq but CMD started elsewhere with no PYTHONPATH to it."""
    text = _replace(DOCKERFILE.read_text(), "PYTHONPATH=/srv/hybridq", "PYTHONPATH=/x")
    text = _replace(text, "USER 10001", "WORKDIR /tmp\nUSER 10001")
    problems = dockerfile_copy_problems(
        parse_dockerfile(text), parse_dockerignore(DOCKERIGNORE.read_text())
    )
    assert any("neither the WORKDIR nor on PYTHONPATH" in p for p in problems), problems


def test_the_dockerignore_check_catches_its_defect() -> None:
    text = _replace(DOCKERIGNORE.read_text(), "\n*\n", "\n")
    problems = dockerignore_problems(parse_dockerignore(text))
    assert any(".venv" in p for p in problems), problems


COMPOSE_MUTATIONS: list[tuple[str, Callable[[Compose], None], str]] = [
    # (check, mutation, expected in a problem)
    ("app services", _set("services.worker.build", "."), "not built from the repository root"),
    ("app services", _set("services.migrate.build", None), "expected"),
    ("app services", _set("services.api.image", "other"), "share one image"),
    ("redis", _set("services.redis.command", ["redis-server", "--appendonly", "no"]), "appendonly"),
    (
        "redis",
        _set(
            "services.redis.command", "redis-server --appendonly yes --maxmemory-policy allkeys-lru"
        ),
        "noeviction",
    ),
    ("env names", _set("services.worker.environment.WORKER_CONCURENCY", "5"), "not a setting"),
    ("env names", _set("services.migrator.environment.REDIS_URL", None), "does not pass REDIS_URL"),
    ("env names", _set("services.migrate.environment.DATABASE_URL", None), "DATABASE_URL"),
    ("settings", _set("services.api.environment.EMBED_WORKER", "true"), "embeds"),
    ("settings", _set("services.worker.environment.WORKER_CONCURRENCY", "0"), "invalid settings"),
    (
        "urls",
        _set("services.api.environment.DATABASE_URL", "postgresql://hybridq:pw@postgres/hybridq"),
        "credentials",
    ),
    (
        "urls",
        _set("services.worker.environment.REDIS_URL", "redis://localhost:6379/0"),
        "host localhost",
    ),
    ("urls", _set("services.postgres.environment.POSTGRES_DB", "other"), "other than POSTGRES_DB"),
    (
        "secrets",
        _set("services.postgres.environment.POSTGRES_PASSWORD", "${POSTGRES_PASSWORD:-pw}"),
        "does not fail",
    ),
    (
        "secrets",
        _set("services.redis.environment.REDISCLI_AUTH", "$REDIS_PASSWORD"),
        "does not fail",
    ),
    (
        "depends_on",
        _set("services.api.depends_on", ["postgres", "redis", "migrate"]),
        "without conditions",
    ),
    (
        "depends_on",
        _set("services.migrate.depends_on.postgres.condition", "service_started"),
        "service_started",
    ),
    ("depends_on", _set("services.worker.depends_on.migrate", None), "migrate with None"),
    ("healthchecks", _set("services.redis.healthcheck", None), "redis-cli ping"),
    ("healthchecks", _set("services.postgres.healthcheck.test", ["CMD", "true"]), "pg_isready"),
    ("healthchecks", _set("services.worker.healthcheck", None), "serves no HTTP"),
    ("healthchecks", _set("services.api.healthcheck", {"disable": True}), "api disables"),
    ("grace", _set("services.worker.stop_grace_period", "30s"), "worker: stop_grace_period"),
    ("grace", _set("services.api.stop_grace_period", None), "api: stop_grace_period 10s"),
    ("grace", _set("services.api.stop_grace_period", "50s"), "uvicorn's graceful shutdown"),
    ("grace", _set("services.migrator.environment.SHUTDOWN_GRACE_PERIOD", "90"), "migrator"),
    ("scale", _set("services.worker.deploy.replicas", 1), "replicas: 1"),
    ("scale", _set("services.worker.container_name", "worker"), "cannot be scaled"),
    (
        "volumes",
        _set("services.postgres.volumes", ["/tmp/pg:/var/lib/postgresql/data"]),
        "postgres",
    ),
    ("volumes", _set("services.redis.volumes", None), "redis keeps /data"),
]


@pytest.mark.parametrize(("check", "mutate", "expected"), COMPOSE_MUTATIONS)
@pytest.mark.usefixtures("clean_env")
def test_each_compose_check_catches_its_defect(
    check: str, mutate: Callable[[Compose], None], expected: str
) -> None:
    compose = copy.deepcopy(load_compose(COMPOSE.read_text()))
    mutate(compose)
    problems = COMPOSE_CHECKS[check](compose)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("services.worker.command", ["python", "-m", "app.workers"], "not importable"),
        ("services.migrate.command", "python -m app.db", "package without __main__"),
        ("services.migrator.command", ["python", "-m", "app.worker"], "expected python -m"),
        ("services.worker.command", "sh -c 'python -m app.worker'", "not python -m"),
        ("services.api.ports", ["8000:8080"], "publishes"),
        ("services.api.command", None, ""),  # falls back to the Dockerfile CMD: still fine
    ],
)
def test_the_command_check_catches_its_defect(path: str, value: Any, expected: str) -> None:
    compose = copy.deepcopy(load_compose(COMPOSE.read_text()))
    _set(path, value)(compose)
    problems = compose_command_problems(compose, parse_dockerfile(DOCKERFILE.read_text()))
    if expected:
        assert any(expected in p for p in problems), problems
    else:
        assert problems == []


def test_module_check_rejects_what_python_m_cannot_run() -> None:
    assert module_problem("app.worker") is None
    assert module_problem("app.db.setup") is None
    assert "without __main__" in (module_problem("app.db") or "")
    assert "not importable" in (module_problem("app.nope") or "")
    assert "not a module of the project" in (module_problem("uvicorn") or "")
