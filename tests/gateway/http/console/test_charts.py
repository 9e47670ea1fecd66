"""The console's SVG charts: well-formed, safe under a strict CSP whatever the labels say, and drawn where
their documented scale puts them (expected coordinates are computed from ``step_scale`` and the module's
layout constants, which the tests pin down independently)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from markupsafe import Markup

from gateway.http.console import charts
from gateway.http.console.charts import Limit, Series, bar_chart, step_chart, step_scale

NS = f"{{{charts.SVG_NAMESPACE}}}"
HOSTILE = '<script>alert(1)</script> & "x"'
START = datetime(2025, 3, 1, tzinfo=UTC)
END = START + timedelta(days=5)
DAY1 = START + timedelta(days=1)
DAY3 = START + timedelta(days=3)


def _parse(svg: Markup) -> ET.Element:
    assert isinstance(svg, Markup)
    return ET.fromstring(str(svg))  # raises on anything not well-formed  # noqa: S314 - our own output


def _classes(element: ET.Element) -> set[str]:
    return set(element.get("class", "").split())


def _with_class(root: ET.Element, tag: str, css: str) -> list[ET.Element]:
    return [element for element in root.iter(NS + tag) if css in _classes(element)]


def _points(polyline: ET.Element) -> list[tuple[float, float]]:
    pairs = (pair.split(",") for pair in polyline.get("points", "").split())
    return [(float(x), float(y)) for x, y in pairs]


def _texts(root: ET.Element) -> list[str]:
    return ["".join(element.itertext()) for element in root.iter(NS + "text")]


def _chart(label: str = "iedereen", limits: tuple[Limit, ...] = (Limit("cap per maand", 5.0),)) -> Markup:
    return step_chart([Series(label, [(DAY1, 1.0), (DAY3, 3.0)])], limits, start=START, end=END, title="ε besteed")


def test_the_scale_is_the_documented_one() -> None:
    """Pins the layout constants and the mapping, so the coordinate tests below cannot agree with a broken
    scale by computing it the same broken way."""
    scale = step_scale([Series("a", [(DAY1, 1.0), (DAY3, 3.0)])], [], start=START, end=END, width=720, height=260)
    assert (scale.left, scale.right, scale.top) == (charts.MARGIN_LEFT, 720 - charts.MARGIN_RIGHT, charts.MARGIN_TOP)
    assert scale.bottom == 260 - charts.MARGIN_BOTTOM - charts.LEGEND_ROW_HEIGHT  # one legend row
    assert scale.y_max == pytest.approx(3.0 * 1.1)
    assert scale.x(START) == scale.left
    assert scale.x(END) == scale.right
    assert scale.x(START + timedelta(days=2.5)) == pytest.approx((scale.left + scale.right) / 2)
    assert scale.y(0.0) == scale.bottom
    assert scale.y(scale.y_max) == pytest.approx(scale.top)
    assert scale.y(scale.y_max / 2) == pytest.approx((scale.top + scale.bottom) / 2)


def test_the_svg_is_well_formed_and_labelled_for_assistive_technology() -> None:
    root = _parse(_chart())
    assert root.tag == NS + "svg"
    assert root.get("viewBox") == "0 0 720 260"
    assert root.get("role") == "img"
    assert root.get("aria-label") == "ε besteed"
    title = root.find(NS + "title")
    assert title is not None
    assert title.text == "ε besteed"


def test_hostile_labels_are_escaped_and_add_no_element_or_attribute() -> None:
    svg = step_chart(
        [Series(HOSTILE, [(DAY1, 1.0)])], [Limit(HOSTILE, 2.0)], start=START, end=END, title=HOSTILE, unit=HOSTILE
    )
    raw = str(svg)
    assert "<script" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;" in raw
    root = _parse(svg)
    assert all(element.tag.rpartition("}")[2] != "script" for element in root.iter())
    assert root.get("aria-label") == HOSTILE  # the attribute holds the text, quotes and all, and ends there
    assert f"{HOSTILE} 2.00" in _texts(root)  # the limit's label, unclipped
    assert HOSTILE in [element.text for element in root.iter(NS + "title")]  # the series' whole name

    bars = _parse(bar_chart([(HOSTILE, 1.0)], title=HOSTILE))
    assert all(element.tag.rpartition("}")[2] != "script" for element in bars.iter())
    assert HOSTILE in [element.text for element in bars.iter(NS + "title")]


def test_no_inline_style_or_event_handler_anywhere() -> None:
    for svg in (_chart(), bar_chart([("a", 1.0)], title="t"), bar_chart([], title="t")):
        for element in _parse(svg).iter():
            assert "style" not in element.attrib
            assert not [name for name in element.attrib if name.lower().startswith("on")]
            assert element.tag.rpartition("}")[2] not in {"script", "style", "foreignObject"}


def test_a_series_steps_up_at_its_points_and_stays_flat_to_the_right_edge() -> None:
    series = [Series("iedereen", [(DAY1, 1.0), (DAY3, 3.0)])]
    limits = [Limit("cap per maand", 5.0)]
    scale = step_scale(series, limits, start=START, end=END)
    root = _parse(step_chart(series, limits, start=START, end=END, title="t"))
    (line,) = root.iter(NS + "polyline")
    assert {"series", "series-0"} <= _classes(line)
    expected = [
        (scale.left, scale.y(0.0)),  # 0 before the first point
        (scale.x(DAY1), scale.y(0.0)),
        (scale.x(DAY1), scale.y(1.0)),
        (scale.x(DAY3), scale.y(1.0)),
        (scale.x(DAY3), scale.y(3.0)),
        (scale.right, scale.y(3.0)),  # flat after the last point, up to the end
    ]
    drawn = _points(line)
    assert len(drawn) == len(expected)
    assert [c for point in drawn for c in point] == pytest.approx([c for point in expected for c in point], abs=0.006)
    assert drawn[-1][1] == drawn[-2][1]  # the last stretch is level
    assert _points(line)[-1][0] == pytest.approx(720 - charts.MARGIN_RIGHT)


def test_series_classes_cycle_through_eight() -> None:
    series = [Series(f"s{index}", [(DAY1, float(index))]) for index in range(10)]
    root = _parse(step_chart(series, [], start=START, end=END, title="t"))
    lines = list(root.iter(NS + "polyline"))
    assert [line.get("class") for line in lines] == [f"series series-{index % 8}" for index in range(10)]
    legend = _with_class(root, "g", "legend-item")
    assert legend  # the first rows of the legend, each with its series' classes on its swatch
    for index, item in enumerate(legend):
        swatches = [element for element in item.iter(NS + "line") if "swatch" in _classes(element)]
        assert [_classes(swatch) >= {"series", f"series-{index % 8}"} for swatch in swatches] == [True]
    assert [item.findtext(NS + "text") for item in legend][:3] == ["s0", "s1", "s2"]


def test_a_limit_is_a_line_at_its_value_labelled_at_the_right_end() -> None:
    series = [Series("iedereen", [(DAY1, 1.0)])]
    limits = [Limit("cap per maand", 2.5)]
    scale = step_scale(series, limits, start=START, end=END)
    root = _parse(step_chart(series, limits, start=START, end=END, title="t"))
    (line,) = _with_class(root, "line", "limit")
    assert float(line.get("y1", "nan")) == pytest.approx(scale.y(2.5), abs=0.006)
    assert float(line.get("y2", "nan")) == pytest.approx(scale.y(2.5), abs=0.006)
    assert float(line.get("x1", "nan")) == pytest.approx(scale.left)
    assert float(line.get("x2", "nan")) == pytest.approx(scale.right)
    (label,) = _with_class(root, "text", "limit-label")
    assert label.text == "cap per maand 2.50"
    assert float(label.get("x", "nan")) >= scale.right


@pytest.mark.parametrize(
    ("values", "limit", "y_max"),
    [((1.0, 3.0), 5.0, 5.5), ((1.0, 7.0), 5.0, 7.7), ((0.0, 0.0), 0.0, 1.0)],
)
def test_the_y_axis_covers_the_largest_value_or_limit(values: tuple[float, float], limit: float, y_max: float) -> None:
    series = [Series("a", [(DAY1, values[0]), (DAY3, values[1])])]
    scale = step_scale(series, [Limit("cap", limit)], start=START, end=END)
    assert scale.y_max == pytest.approx(y_max)
    root = _parse(step_chart(series, [Limit("cap", limit)], start=START, end=END, title="t"))
    ys = [y for line in root.iter(NS + "polyline") for _, y in _points(line)]
    ys += [float(line.get("y1", "nan")) for line in _with_class(root, "line", "limit")]
    assert min(ys) >= charts.MARGIN_TOP  # nothing is drawn above the plot area


def test_four_or_five_y_ticks_from_zero_within_the_axis() -> None:
    for y_max in (0.011, 1.0, 1.1, 1.26, 3.3, 5.5, 7.7, 12.0, 99.0, 12345.0):
        ticks = charts.y_ticks(y_max)
        assert 4 <= len(ticks) <= 5, (y_max, ticks)
        assert ticks[0] == 0.0
        assert ticks[-1] <= y_max * (1 + 1e-9)
    root = _parse(_chart())
    labels = [element.text for element in _with_class(root, "text", "y-tick-label")]
    assert labels == ["0.00", "1.25", "2.50", "3.75", "5.00"]  # y_max 5.5: steps of 1.25, fixed decimals


def test_x_labels_are_utc_days_in_dutch_at_most_about_eight() -> None:
    root = _parse(_chart())
    scale = step_scale([Series("iedereen", [(DAY1, 1.0)])], [], start=START, end=END)
    labels = _with_class(root, "text", "x-tick-label")
    assert [label.text for label in labels] == ["1 mrt", "2 mrt", "3 mrt", "4 mrt", "5 mrt", "6 mrt"]
    marks = _with_class(root, "line", "x-tick")
    assert float(marks[3].get("x1", "nan")) == pytest.approx(scale.x(DAY3), abs=0.006)

    year = datetime(2025, 1, 1, tzinfo=UTC)
    long = _parse(step_chart([], [], start=year, end=year + timedelta(days=365), title="t"))
    texts = [element.text or "" for element in _with_class(long, "text", "x-tick-label")]
    assert 2 <= len(texts) <= charts.MAX_X_LABELS
    assert texts[0] == "1 jan"
    assert {text.split()[1] for text in texts} <= set(charts.DUTCH_MONTHS)
    assert [charts.day_label(datetime(2025, month, 9, tzinfo=UTC)) for month in (3, 5, 10)] == [
        "9 mrt",
        "9 mei",
        "9 okt",
    ]

    midday = START + timedelta(hours=12)
    mid = _parse(step_chart([], [], start=midday, end=midday + timedelta(days=2), title="t"))
    assert [element.text for element in _with_class(mid, "text", "x-tick-label")] == ["2 mrt", "3 mrt"]


def test_an_end_not_after_the_start_is_refused() -> None:
    with pytest.raises(ValueError, match="end"):
        step_chart([], [], start=START, end=START, title="t")
    with pytest.raises(ValueError, match="end"):
        step_chart([], [], start=END, end=START, title="t")
    with pytest.raises(ValueError, match="timezone"):
        step_chart([], [], start=START.replace(tzinfo=None), end=END, title="t")


def test_bars_are_as_long_as_their_values_with_label_and_value() -> None:
    rows = [("budget_exhausted", 8.0), ("not_permitted", 4.0), ("too_small", 2.0)]
    root = _parse(bar_chart(rows, title="Weigeringen vandaag", width=720, bar_height=22))
    bars = _with_class(root, "rect", "bar")
    assert len(bars) == 3
    widths = [float(bar.get("width", "nan")) for bar in bars]
    room = 720 - charts.BAR_LABEL_WIDTH - charts.BAR_VALUE_WIDTH
    assert widths == pytest.approx([room, room / 2, room / 4], abs=0.006)
    assert [float(bar.get("height", "nan")) for bar in bars] == [22.0] * 3
    tops = [float(bar.get("y", "nan")) for bar in bars]
    assert tops == sorted(set(tops))  # one row each, downwards
    assert [label.text for label in _with_class(root, "text", "bar-label")] == [label for label, _ in rows]
    values = _with_class(root, "text", "bar-value")
    assert [value.text for value in values] == ["8", "4", "2"]
    assert float(values[1].get("x", "nan")) > charts.BAR_LABEL_WIDTH + widths[1]  # at the bar's end


def test_a_bar_chart_grows_with_its_rows() -> None:
    def height(count: int) -> float:
        root = _parse(bar_chart([(f"r{index}", 1.0) for index in range(count)], title="t", bar_height=22))
        return float(root.get("viewBox", "").split()[3])

    assert height(2) - height(1) == height(5) - height(4) == 22 + charts.BAR_GAP


def test_an_empty_bar_chart_says_there_is_no_data() -> None:
    root = _parse(bar_chart([], title="Weigeringen vandaag"))
    assert "geen gegevens" in _texts(root)
    assert not _with_class(root, "rect", "bar")
    assert root.get("aria-label") == "Weigeringen vandaag"


def test_numbers_are_fixed_point_never_a_float_repr() -> None:
    series = [Series("a", [(START + timedelta(hours=7), 1 / 3), (DAY3, 2 / 3)])]
    raw = str(step_chart(series, [Limit("cap", 0.1 + 0.2)], start=START, end=END, title="t"))
    assert "0.3333" not in raw
    assert "0.30000000000000004" not in raw
    assert "cap 0.30" in raw
    assert not re.search(r"\d[eE][-+]?\d", raw)  # no exponent notation either
