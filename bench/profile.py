"""Optional sampling profile of the drain's service processes with py-spy (`--py-spy`).

py-spy is not a dependency: `.venv/bin/pip install py-spy`. It samples with
`--nonblocking` (the target is not paused) and only on-CPU stacks (idle is left out),
writing collapsed stacks ("frame;frame;... count"), which `summarize` ranks.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATE = 250  # samples per second


def py_spy_path() -> str | None:
    exe = shutil.which("py-spy")
    if exe is None:
        candidate = Path(sys.executable).parent / "py-spy"
        exe = str(candidate) if candidate.exists() else None
    return exe


@dataclass(slots=True)
class PySpy:
    proc: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def attach(cls, pid: int, output: Path) -> PySpy:
        exe = py_spy_path()
        if exe is None:
            raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
        log = output.with_suffix(".log").open("wb")
        try:
            proc = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(output),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        return cls(proc, output)

    def finish(self, timeout: float = 30.0) -> Path | None:
        """Wait for py-spy to write its file (it stops when the target exits)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.output if self.output.exists() else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


# Frames on every stack of a service process: they say nothing about where time goes.
_ENTRY = ("_run_module_as_main", "_run_code", "<module>", "run", "main", "Runner.run", "serve")


def _package(func: str, path: str) -> str:
    if func == "Runner.run":
        return "event loop (uvloop, C)"  # the loop's own work, below Python frames
    for marker, name in (
        ("app/", "app"),
        ("bench/", "bench"),
        ("asyncpg", "asyncpg"),
        ("redis/", "redis-py"),
        ("uvloop", "uvloop"),
        ("asyncio/", "asyncio"),
        ("logging/", "logging"),
        ("orjson", "orjson"),
        ("pydantic", "pydantic"),
    ):
        if marker in path:
            return name
    return "other"


def _parse(frame: str) -> tuple[str, str, str]:
    """(`func (short/path.py)`, func, package) of a collapsed-stack frame."""
    m = _FRAME.match(frame)
    if m is None:
        return frame, frame, "other"
    func, path = m.group("func"), m.group("file")
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{func} ({short})", func, _package(func, path)


def summarize(path: Path | None, top: int = 12) -> dict[str, Any]:
    """Top functions by own samples and by inclusive samples; own samples by package.

    Samples taken while the process was still importing (py-spy attaches at start) are
    counted apart and left out of the rest.
    """
    if path is None:
        return {"samples": 0, "error": "py-spy wrote no output"}
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = startup = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any("importlib._bootstrap" in f for f in frames):
            startup += count
            continue
        total += count
        name, _, pkg = _parse(frames[-1])
        leaf[name] += count
        packages[pkg] += count
        for fn_name, func, _pkg in {_parse(f) for f in frames}:
            if func not in _ENTRY:
                inclusive[fn_name] += count

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)] if total else []

    return {
        "samples": total,
        "startup_samples": startup,
        "rate_hz": RATE,
        "self_pct": pct(leaf),
        "inclusive_pct": pct(inclusive),
        "self_by_package_pct": pct(packages),
    }
