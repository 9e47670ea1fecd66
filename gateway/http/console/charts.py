"""The console's charts, rendered on the server as SVG: budget spent over time and counts per reason.

Why SVG built here rather than a charting library in the browser: the console runs under a strict
Content-Security-Policy (no inline script or style, nothing from another origin), it must work on a
network without internet, and an officer prints its pages for a review. Markup made on the server needs no
JavaScript and no CDN, is in the page the moment the page is (and so in the audited digest of its bytes),
and prints as it shows.

So the output carries only geometry (``viewBox``, ``x``, ``y``, ``width``, ``height``, ``points``) and
``class`` names; every colour, stroke, dash and font comes from the console's stylesheet. It relies on:

* ``chart`` with ``step-chart`` or ``bar-chart`` on the ``<svg>``;
* ``axis`` (the two axis lines), ``grid`` (a line per y tick), ``y-tick-label``, ``x-tick`` (a mark per
  labelled day), ``x-tick-label``, ``axis-unit`` (the unit above the y axis);
* ``series series-N`` (N = 0..7, cycling) on each step line (a ``<polyline>``, which needs ``fill: none``)
  and, with ``swatch``, on its short ``<line>`` in a ``legend-item`` (of the ``legend`` group) beside
  a ``legend-label``;
* ``limit`` (a horizontal cap, to be dashed) and ``limit-label``;
* ``bar``, ``bar-label``, ``bar-value``, and ``empty`` for "geen gegevens".

Every text that comes from data is XML-escaped (``markupsafe.escape``), so a label cannot add an element
or an attribute; numbers are written fixed-point, never as ``repr`` of a float. Both functions return
``Markup`` so that Jinja2 does not escape the SVG a second time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

SVG_NAMESPACE = "http://www.w3.org/2000/svg"

# Step chart layout, in SVG user units. The plot area runs from MARGIN_LEFT to width - MARGIN_RIGHT and
# from MARGIN_TOP down to height - MARGIN_BOTTOM - LEGEND_ROW_HEIGHT * (legend rows); ``step_scale``
# gives exactly the mapping ``step_chart`` draws with.
MARGIN_LEFT = 56
MARGIN_RIGHT = 128  # room for the limit labels at the right end of their lines
MARGIN_TOP = 20
MARGIN_BOTTOM = 24  # room for the day labels under the x axis
LEGEND_ROW_HEIGHT = 18
LEGEND_ITEM_WIDTH = 160
LEGEND_MAX_ROWS = 3  # beyond this the legend ends in "+ N meer" rather than squeezing the plot away
LABEL_MAX_CHARS = 22  # a longer label is cut with "…"; the whole label stays in the element's <title>
SERIES_CLASSES = 8
HEADROOM = 1.1  # the y axis runs to 110% of the largest value or limit, so a cap is never on the frame
MAX_X_LABELS = 8
Y_TICKS_MAX = 5
COORDINATE_DECIMALS = 2
VALUE_DECIMALS = 2

# Bar chart layout.
BAR_LABEL_WIDTH = 180
BAR_VALUE_WIDTH = 64
BAR_GAP = 6
BAR_PADDING = 8
EMPTY_HEIGHT = 40
EMPTY_TEXT = "geen gegevens"

DUTCH_MONTHS = ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec")

_DAY = timedelta(days=1)
_NICE_STEPS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)  # no two more than 4/3 apart: 4-5 ticks
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class Series:
    """One step line: cumulative values at moments, sorted by moment (timezone-aware)."""

    label: str
    points: Sequence[tuple[datetime, float]]


@dataclass(frozen=True, slots=True)
class Limit:
    """A horizontal line across the plot, such as a budget cap."""

    label: str
    value: float


@dataclass(frozen=True, slots=True)
class Scale:
    """How ``step_chart`` maps a moment and a value to SVG coordinates (the plot area's edges included)."""

    start: datetime
    end: datetime
    y_max: float
    left: float
    right: float
    top: float
    bottom: float

    def x(self, moment: datetime) -> float:
        """Moments outside the window are drawn at its edge."""
        moment = min(max(_aware(moment), self.start), self.end)
        fraction = (moment - self.start) / (self.end - self.start)
        return self.left + fraction * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - value / self.y_max * (self.bottom - self.top)


def step_scale(
    series: Sequence[Series],
    limits: Sequence[Limit],
    *,
    start: datetime,
    end: datetime,
    width: int = 720,
    height: int = 260,
) -> Scale:
    """The scale of the chart ``step_chart`` draws for the same arguments: y from 0 to the largest value
    shown or limit times ``HEADROOM`` (1 when all are 0), x from ``start`` to ``end``."""
    start, end = _aware(start), _aware(end)
    if end <= start:
        raise ValueError("a chart's end must come after its start")
    values = [_finite(value) for one in series for moment, value in one.points if _aware(moment) <= end]
    values += [_finite(limit.value) for limit in limits]
    largest = max(values, default=0.0)
    bottom = height - MARGIN_BOTTOM - LEGEND_ROW_HEIGHT * len(_legend_rows(len(series), width))
    if width - MARGIN_RIGHT - MARGIN_LEFT < 1 or bottom - MARGIN_TOP < 1:
        raise ValueError(f"a {width} by {height} chart leaves no room to plot")
    return Scale(
        start=start,
        end=end,
        y_max=largest * HEADROOM if largest > 0 else 1.0,
        left=MARGIN_LEFT,
        right=width - MARGIN_RIGHT,
        top=MARGIN_TOP,
        bottom=bottom,
    )


def step_chart(
    series: Sequence[Series],
    limits: Sequence[Limit],
    *,
    start: datetime,
    end: datetime,
    title: str,
    unit: str = "ε",
    width: int = 720,
    height: int = 260,
) -> Markup:
    """Cumulative step lines from ``start`` to ``end``: 0 before a series' first point, flat after its last
    one up to ``end``, with each limit as a horizontal line labelled "label value" at its right end."""
    scale = step_scale(series, limits, start=start, end=end, width=width, height=height)
    parts = [_open_svg("chart step-chart", width, height, title)]
    parts += _y_axis(scale, unit)
    parts += _x_axis(scale)
    for limit in limits:
        y = _n(scale.y(limit.value))
        parts.append(f'<line class="limit" x1="{_n(scale.left)}" y1="{y}" x2="{_n(scale.right)}" y2="{y}"/>')
        label = f"{limit.label} {limit.value:.{VALUE_DECIMALS}f}"
        parts.append(f'<text class="limit-label" x="{_n(scale.right + 4)}" y="{_n(scale.y(limit.value) + 4)}">')
        parts.append(f"{_text(label)}</text>")
    for index, one in enumerate(series):
        points = " ".join(f"{_n(x)},{_n(y)}" for x, y in _steps(scale, one.points))
        parts.append(f'<polyline class="series series-{index % SERIES_CLASSES}" points="{points}">')
        parts.append(f"<title>{_text(one.label)}</title></polyline>")
    parts += _legend(series, width, height)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every data text in it went through _text (escape)


def bar_chart(
    rows: Sequence[tuple[str, float]], *, title: str, width: int = 720, bar_height: int = 22, decimals: int = 0
) -> Markup:
    """Horizontal bars, the longest as long as the room allows, the label to the left and the value (with
    ``decimals`` decimals: the console's bars are counts) at the bar's end. No rows: "geen gegevens"."""
    if not rows:
        parts = [_open_svg("chart bar-chart", width, EMPTY_HEIGHT, title)]
        parts.append(f'<text class="empty" x="{BAR_PADDING}" y="{EMPTY_HEIGHT // 2 + 4}">{EMPTY_TEXT}</text></svg>')
        return Markup("".join(parts))  # noqa: S704 - a constant text
    room = width - BAR_LABEL_WIDTH - BAR_VALUE_WIDTH
    if room < 1 or bar_height < 1:
        raise ValueError(f"a bar chart {width} wide with bars {bar_height} high leaves no room for bars")
    values = [_finite(value) for _, value in rows]
    largest = max(values)
    height = 2 * BAR_PADDING + len(rows) * (bar_height + BAR_GAP) - BAR_GAP
    parts = [_open_svg("chart bar-chart", width, height, title)]
    for index, ((label, _), value) in enumerate(zip(rows, values, strict=True)):
        top = BAR_PADDING + index * (bar_height + BAR_GAP)
        length = value / largest * room if largest > 0 else 0.0
        baseline = _n(top + bar_height / 2 + 4)
        parts.append(f'<text class="bar-label" x="{BAR_PADDING}" y="{baseline}">{_clipped(label)}</text>')
        parts.append(
            f'<rect class="bar" x="{BAR_LABEL_WIDTH}" y="{top}" width="{_n(length)}" height="{bar_height}">'
            f"<title>{_text(label)}</title></rect>"
        )
        parts.append(
            f'<text class="bar-value" x="{_n(BAR_LABEL_WIDTH + length + 4)}" y="{baseline}">{value:.{decimals}f}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every data text in it went through _text (escape)


def day_label(moment: datetime) -> str:
    """``d MMM`` with the Dutch month abbreviation, as the console's readers write dates: "3 mrt"."""
    return f"{moment.day} {DUTCH_MONTHS[moment.month - 1]}"


def y_ticks(y_max: float) -> list[float]:
    """4 or 5 round values from 0 up to ``y_max``: the smallest step from ``_NICE_STEPS`` times 10^k that
    needs no more than ``Y_TICKS_MAX`` ticks."""
    magnitude = 10.0 ** math.floor(math.log10(y_max / Y_TICKS_MAX))
    for factor in (*_NICE_STEPS, 10.0):
        step = factor * magnitude
        count = math.floor(y_max / step + 1e-9) + 1
        if count <= Y_TICKS_MAX:
            return [index * step for index in range(count)]
    raise AssertionError("unreachable: a step of 10 times the magnitude fits")  # pragma: no cover


def _y_axis(scale: Scale, unit: str) -> list[str]:
    ticks = y_ticks(scale.y_max)
    decimals = next((d for d in range(6) if all(abs(round(tick, d) - tick) < 1e-9 * scale.y_max for tick in ticks)), 6)
    left = _n(scale.left)
    parts = [
        f'<text class="axis-unit" x="4" y="{_n(scale.top - 8)}">{_text(unit)}</text>',
        f'<line class="axis" x1="{left}" y1="{_n(scale.top)}" x2="{left}" y2="{_n(scale.bottom)}"/>',
    ]
    for tick in ticks:
        y = _n(scale.y(tick))
        parts.append(f'<line class="grid" x1="{_n(scale.left)}" y1="{y}" x2="{_n(scale.right)}" y2="{y}"/>')
        parts.append(f'<text class="y-tick-label" x="4" y="{_n(scale.y(tick) + 4)}">{tick:.{decimals}f}</text>')
    return parts


def _x_axis(scale: Scale) -> list[str]:
    """A label at UTC midnights, every day or every few so that there are at most ``MAX_X_LABELS``."""
    first = datetime(scale.start.year, scale.start.month, scale.start.day, tzinfo=UTC)
    if first < scale.start:
        first += _DAY
    days = math.floor((scale.end - first) / _DAY) + 1 if first <= scale.end else 0
    every = max(1, math.ceil(days / MAX_X_LABELS))
    bottom = _n(scale.bottom)
    parts = [f'<line class="axis" x1="{_n(scale.left)}" y1="{bottom}" x2="{_n(scale.right)}" y2="{bottom}"/>']
    for index in range(0, days, every):
        day = first + index * _DAY
        x = scale.x(day)
        parts.append(f'<line class="x-tick" x1="{_n(x)}" y1="{bottom}" x2="{_n(x)}" y2="{_n(scale.bottom + 4)}"/>')
        parts.append(f'<text class="x-tick-label" x="{_n(x + 2)}" y="{_n(scale.bottom + 16)}">{day_label(day)}</text>')
    return parts


def _steps(scale: Scale, points: Sequence[tuple[datetime, float]]) -> list[tuple[float, float]]:
    """Corners of the step line: 0 from the left edge, up (or down) at each point, flat to the right edge.
    A point before ``start`` sets the level the line starts at; one after ``end`` is not drawn."""
    level = 0.0
    corners = [(scale.left, scale.y(0.0))]
    for moment, value in points:
        if _aware(moment) > scale.end:
            break
        x = scale.x(moment)
        corners += [(x, scale.y(level)), (x, scale.y(value))]
        level = value
    corners.append((scale.right, scale.y(level)))
    return corners


def _legend_rows(count: int, width: int) -> list[range]:
    """Which series each legend row names (at most ``LEGEND_MAX_ROWS`` rows)."""
    columns = max(1, (width - MARGIN_LEFT) // LEGEND_ITEM_WIDTH)
    rows = min(LEGEND_MAX_ROWS, math.ceil(count / columns))
    return [range(row * columns, min(count, (row + 1) * columns)) for row in range(rows)]


def _legend(series: Sequence[Series], width: int, height: int) -> list[str]:
    rows = _legend_rows(len(series), width)
    if not rows:
        return []
    shown = rows[-1].stop
    if shown < len(series):  # the last place says how many more there are instead
        shown -= 1
    parts = ['<g class="legend">']
    for row, indices in enumerate(rows):
        y = height - LEGEND_ROW_HEIGHT * (len(rows) - row) + LEGEND_ROW_HEIGHT / 2
        for column, index in enumerate(indices):
            x = MARGIN_LEFT + column * LEGEND_ITEM_WIDTH
            if index >= shown:
                more = len(series) - shown
                parts.append(f'<text class="legend-label" x="{_n(x)}" y="{_n(y + 4)}">+ {more} meer</text>')
                break
            label = series[index].label
            css = f"series series-{index % SERIES_CLASSES} swatch"
            parts.append(f'<g class="legend-item"><title>{_text(label)}</title>')
            parts.append(f'<line class="{css}" x1="{_n(x)}" y1="{_n(y)}" x2="{_n(x + 16)}" y2="{_n(y)}"/>')
            parts.append(f'<text class="legend-label" x="{_n(x + 22)}" y="{_n(y + 4)}">{_clipped(label)}</text></g>')
    parts.append("</g>")
    return parts


def _open_svg(css: str, width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="{SVG_NAMESPACE}" class="{css}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_text(title)}"><title>{_text(title)}</title>'
    )


def _text(value: str) -> str:
    """Escaped for XML text and attributes, without the characters XML 1.0 cannot hold at all."""
    return str(escape(_NOT_XML.sub("", value)))


def _clipped(value: str) -> str:
    shown = value if len(value) <= LABEL_MAX_CHARS else value[: LABEL_MAX_CHARS - 1] + "…"
    return _text(shown)


def _n(value: float) -> str:
    return f"{value:.{COORDINATE_DECIMALS}f}"


def _finite(value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a chart plots finite values from 0 up, not {value:.{VALUE_DECIMALS}f}")
    return value


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a chart's moments must be timezone-aware")
    return moment.astimezone(UTC)
