"""Figures, the printed table and the JSON file."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

Direction = Literal[">=", "<=", ""]


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass(slots=True)
class Metric:
    scenario: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: float | None = None
    direction: Direction = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def passed(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        if self.direction == ">=":
            return self.median >= self.target
        return self.median <= self.target

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            median=self.median if self.values else None,
            min=min(self.values) if self.values else None,
            max=max(self.values) if self.values else None,
            passed=self.passed,
        )
        return d


@dataclass(slots=True)
class Results:
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def metric(
        self,
        scenario: str,
        name: str,
        unit: str,
        target: float | None = None,
        direction: Direction = "",
    ) -> Metric:
        for m in self.metrics:
            if m.scenario == scenario and m.name == name:
                return m
        m = Metric(scenario, name, unit, target=target, direction=direction)
        self.metrics.append(m)
        return m

    def find(self, scenario: str, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.scenario == scenario and m.name == name), None)

    def error(self, scenario: str, message: str) -> None:
        self.errors.setdefault(scenario, []).append(message)

    def note(self, scenario: str, message: str) -> None:
        notes = self.notes.setdefault(scenario, [])
        if message not in notes:
            notes.append(message)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "meta": self.meta,
                "metrics": [m.as_dict() for m in self.metrics],
                "errors": self.errors,
                "notes": self.notes,
                "details": self.details,
            },
            option=orjson.OPT_INDENT_2,
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_json())


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: Results) -> str:
    header = ("scenario", "metric", "median", "min–max", "runs", "target", "result")  # noqa: RUF001
    rows: list[tuple[str, ...]] = []
    for m in results.metrics:
        if m.values:
            rng = f"{fmt(min(m.values))}–{fmt(max(m.values))}"  # noqa: RUF001
            median = f"{fmt(m.median)} {m.unit}"
        else:
            rng, median = "-", "-"
        target = f"{m.direction} {fmt(m.target)} {m.unit}" if m.target is not None else ""
        verdict = {True: "PASS", False: "FAIL", None: ""}[m.passed]
        if not m.values and m.target is not None:
            verdict = "n/a"
        rows.append((m.scenario, m.name, median, rng, str(len(m.values)), target, verdict))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
