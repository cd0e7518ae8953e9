"""Line charts drawn as SVG on the server: the page needs no chart library and no
script, and every label goes through the template's escaping."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from app.dashboard.history import Bucket, Window, merge_wait, quantile

WIDTH = 720
HEIGHT = 200
LEFT = 56  # room for the y labels
RIGHT = 12
TOP = 10
BOTTOM = 26  # room for the x labels


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    css: str  # class of the stroke (colour and dash), defined in dashboard.css
    segments: list[str]  # SVG polyline points, one string per run without gaps
    dots: list[tuple[float, float]]  # a lone point between gaps is drawn as a dot
    summary: str  # for the legend and the text alternative


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    width: int
    height: int
    lines: list[Line]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    plot: tuple[float, float, float, float]  # left, top, right, bottom
    description: str
    empty: bool


def nice_ceiling(value: float, floor: float) -> float:
    """The top of an axis with four ticks: 4 times a step of 1, 2 or 5 times a power of
    ten, so that every tick is a round number; at least `floor`."""
    step = max(value, floor) / 4
    power = 10.0 ** math.floor(math.log10(step))
    for factor in (1, 2, 5, 10):
        if factor * power >= step * (1 - 1e-9):
            return 4 * factor * power
    return 40 * power  # pragma: no cover - the loop always returns


def hhmm(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


def line_chart(
    title: str,
    starts: Sequence[int],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    fmt: Callable[[float], str],
    x_every: int,
    summarize: Callable[[Sequence[float | None]], str],
    floor: float,
) -> Chart:
    """A chart of `series` (label, css class, one value or None per start time)."""
    values = [v for _, _, vs in series for v in vs if v is not None]
    top = nice_ceiling(max(values, default=0.0), floor)
    left, right = float(LEFT), float(WIDTH - RIGHT)
    upper, lower = float(TOP), float(HEIGHT - BOTTOM)
    n = max(1, len(starts) - 1)

    def x(i: int) -> float:
        return round(left + (right - left) * i / n, 1)

    def y(v: float) -> float:
        return round(lower - (lower - upper) * v / top, 1)

    lines = []
    for label, css, vs in series:
        segments: list[str] = []
        dots: list[tuple[float, float]] = []
        run: list[tuple[float, float]] = []
        for i, v in enumerate([*vs, None]):
            if v is not None:
                run.append((x(i), y(v)))
                continue
            if len(run) == 1:
                dots.append(run[0])
            elif run:
                segments.append(" ".join(f"{px},{py}" for px, py in run))
            run = []
        lines.append(Line(label, css, segments, dots, summarize(vs)))
    y_ticks = [(y(top * k / 4), fmt(top * k / 4)) for k in range(5)]
    x_ticks = [(x(i), hhmm(starts[i])) for i in range(0, len(starts), x_every)]
    description = f"{title}: " + "; ".join(f"{line.label} {line.summary}" for line in lines)
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        lines=lines,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        plot=(left, upper, right, lower),
        description=description,
        empty=not values,
    )


# --- the charts of the history ------------------------------------------------------------

FLOWS = (
    ("completed", "Completed", "s-completed"),
    ("failed", "Failed attempts", "s-failed"),
    ("dead_lettered", "Dead-lettered", "s-dead"),
    ("created", "Created (HTTP)", "s-created"),
)


@dataclass(frozen=True, slots=True)
class QueueWindow:
    """One queue's figures over the whole window."""

    name: str
    counts: dict[str, int]
    wait_p50: float | None
    wait_p95: float | None


@dataclass(frozen=True, slots=True)
class HistoryCharts:
    window: Window
    flow: Chart
    wait: list[tuple[str, Chart]]  # one chart per queue that had waits
    queues: list[QueueWindow]


def _total(vs: Sequence[float | None]) -> str:
    return f"total {sum(v or 0 for v in vs):,.0f}"


def _seconds(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v * 1000:.4g} ms" if v < 1 else f"{v:.4g} s"


def _median_of(vs: Sequence[float | None]) -> str:
    seen = sorted(v for v in vs if v is not None)
    if not seen:
        return "no data"
    return f"median {_seconds(seen[len(seen) // 2])}"


def history_charts(window: Window, buckets: list[Bucket], queue: str | None) -> HistoryCharts:
    """The flow chart (jobs per bucket, all queues or one), a wait-time chart per queue
    (p50 and p95 per bucket) and the window's figures per queue."""
    starts = [b.start for b in buckets]
    x_every = max(1, window.points // 6)
    unit = "minute" if window.resolution == 60 else f"{window.resolution // 60} minutes"
    flow = line_chart(
        f"Jobs per {unit}" + (f" in {queue}" if queue else ", all queues"),
        starts,
        [(label, css, [float(b.total(c, queue)) for b in buckets]) for c, label, css in FLOWS],
        fmt=lambda v: f"{v:,.0f}",
        x_every=x_every,
        summarize=_total,
        floor=4.0,  # whole numbers on the axis: at least 0, 1, 2, 3, 4
    )
    names = sorted(
        {q for b in buckets for q in b.wait}
        | {q for b in buckets for c in b.counters.values() for q in c}
    )
    if queue is not None:
        names = [n for n in names if n == queue]
    wait_charts = []
    per_queue = []
    for name in names:
        p50 = [quantile(b.wait.get(name, {}), 0.5) for b in buckets]
        p95 = [quantile(b.wait.get(name, {}), 0.95) for b in buckets]
        merged = merge_wait(buckets, name)
        per_queue.append(
            QueueWindow(
                name=name,
                counts={c: sum(b.total(c, name) for b in buckets) for c, _, _ in FLOWS},
                wait_p50=quantile(merged, 0.5),
                wait_p95=quantile(merged, 0.95),
            )
        )
        if merged:
            wait_charts.append(
                (
                    name,
                    line_chart(
                        f"Wait time in {name} (from due to start)",
                        starts,
                        [("p50", "s-p50", p50), ("p95", "s-p95", p95)],
                        fmt=_seconds,
                        x_every=x_every,
                        summarize=_median_of,
                        floor=0.004,
                    ),
                )
            )
    return HistoryCharts(window=window, flow=flow, wait=wait_charts, queues=per_queue)
