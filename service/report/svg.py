"""Inline SVG charts from plain numbers: scales with readable ticks, axes, lines, bands, markers.

Every string that reaches the markup goes through ``esc``; numbers are formatted here. The
charts carry ``class`` names (``series``, ``band``, ``point``, ``bar`` ...) that the tests and a
person's browser tools can find.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Okabe-Ito (distinguishable with the common colour-vision deficiencies), yellow darkened to read
# on white, then two more for long optimizer lists.
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#9A7B00",
    "#7F3C8D", "#6B6B6B",
)  # fmt: skip
AXIS_COLOUR = "#333333"
GRID_COLOUR = "#e3e3e3"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""

SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def esc(value: object) -> str:
    """Text or attribute value made inert (quotes included)."""
    return html.escape(str(value), quote=True)


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def number(value: float | None, digits: int = 4) -> str:
    """A figure for people: 4 significant digits, scientific only when very small or large."""
    if value is None or not math.isfinite(value):
        return "n/a" if value is None else str(value)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(1, digits - 2)}e}".replace("e-0", "e-").replace("e+0", "e")


def _fmt(value: float) -> str:
    """A coordinate: two decimals are below a pixel's width."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Scale:
    """Maps a data interval onto a pixel interval, linearly or in log10."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    @classmethod
    def fit(cls, values: Sequence[float], start: float, end: float, *, log: bool = False) -> Scale:
        """A scale around ``values`` with a margin, on nice bounds (decades when ``log``)."""
        finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if not finite:
            return cls(1.0, 10.0, start, end, log) if log else cls(0.0, 1.0, start, end)
        low, high = min(finite), max(finite)
        if log:
            return cls(
                10 ** math.floor(math.log10(low) + 1e-9),
                10 ** math.ceil(math.log10(high) - 1e-9) if high > low else 10 * low,
                start, end, True,
            )  # fmt: skip
        if high == low:
            pad = abs(low) * 0.05 or 0.5
            low, high = low - pad, high + pad
        step = nice_step((high - low) / 5)
        return cls(math.floor(low / step) * step, math.ceil(high / step) * step, start, end)

    def __call__(self, value: float) -> float:
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        span = (high - low) or 1.0
        return self.start + (value - low) / span * (self.end - self.start)

    def ticks(self, most: int = 7) -> list[tuple[float, str]]:
        """Tick values and their labels, at most ``most`` of them (about, for linear scales)."""
        if self.log:
            first, last = round(math.log10(self.low)), round(math.log10(self.high))
            decades = list(range(first, last + 1))
            stride = max(1, math.ceil(len(decades) / most))
            return [(10.0**k, decade_label(k)) for k in decades[::stride]]
        step = nice_step((self.high - self.low) / min(5, most))
        count = round((self.high - self.low) / step)
        values = [self.low + i * step for i in range(count + 1)]
        digits = max(0, -math.floor(math.log10(step) + 1e-9))
        return [(v, f"{v:.{digits}f}") for v in values]


def nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw``."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def decade_label(exponent: int) -> str:
    """``10⁻³``; 1 and 10 written plainly."""
    return {0: "1", 1: "10"}.get(exponent, f"10{str(exponent).translate(SUPERSCRIPTS)}")


@dataclass
class Chart:
    """One SVG figure: a plot area with two scales, axes and the marks drawn on it."""

    width: int
    height: int
    x: Scale
    y: Scale
    title: str
    parts: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        width: int,
        height: int,
        xs: Sequence[float],
        ys: Sequence[float],
        title: str,
        x_log: bool = False,
        y_log: bool = False,
        margin: tuple[int, int, int, int] = (16, 20, 46, 62),
    ) -> Chart:
        """A chart whose scales fit ``xs`` and ``ys``; margin is (top, right, bottom, left)."""
        top, right, bottom, left = margin
        x = Scale.fit(xs, left, width - right, log=x_log)
        y = Scale.fit(ys, height - bottom, top, log=y_log)
        return cls(width, height, x, y, title)

    @property
    def left(self) -> float:
        return self.x.start

    @property
    def right(self) -> float:
        return self.x.end

    @property
    def top(self) -> float:
        return self.y.end

    @property
    def bottom(self) -> float:
        return self.y.start

    def axes(self, x_label: str, y_label: str) -> None:
        """Grid, ticks and the axis labels."""
        # About 50 px per tick label, so that labels never run into each other.
        for value, label in self.x.ticks(max(3, int((self.right - self.left) / 50))):
            px = _fmt(self.x(value))
            self.parts.append(
                f'<line class="grid" x1="{px}" x2="{px}" y1="{_fmt(self.top)}" '
                f'y2="{_fmt(self.bottom)}" stroke="{GRID_COLOUR}"/>'
                f'<text x="{px}" y="{_fmt(self.bottom + 16)}" text-anchor="middle" '
                f'font-size="11" fill="{AXIS_COLOUR}">{esc(label)}</text>'
            )
        for value, label in self.y.ticks():
            py = _fmt(self.y(value))
            self.parts.append(
                f'<line class="grid" x1="{_fmt(self.left)}" x2="{_fmt(self.right)}" y1="{py}" '
                f'y2="{py}" stroke="{GRID_COLOUR}"/>'
                f'<text x="{_fmt(self.left - 6)}" y="{py}" text-anchor="end" '
                f'dominant-baseline="middle" font-size="11" fill="{AXIS_COLOUR}">'
                f"{esc(label)}</text>"
            )
        middle = (self.top + self.bottom) / 2
        self.parts.append(
            f'<rect x="{_fmt(self.left)}" y="{_fmt(self.top)}" '
            f'width="{_fmt(self.right - self.left)}" height="{_fmt(self.bottom - self.top)}" '
            f'fill="none" stroke="{AXIS_COLOUR}" stroke-width="1"/>'
            f'<text class="axis-label" x="{_fmt((self.left + self.right) / 2)}" '
            f'y="{_fmt(self.height - 8)}" text-anchor="middle" font-size="12" '
            f'fill="{AXIS_COLOUR}">{esc(x_label)}</text>'
            f'<text class="axis-label" transform="translate(14 {_fmt(middle)}) rotate(-90)" '
            f'text-anchor="middle" font-size="12" fill="{AXIS_COLOUR}">'
            f"{esc(y_label)}</text>"
        )

    def line(
        self, points: Sequence[tuple[float, float]], stroke: str, *, label: str, width: float = 2
    ) -> None:
        """A polyline through ``points`` (data coordinates)."""
        if not points:
            return
        coords = " ".join(f"{_fmt(self.x(px))},{_fmt(self.y(py))}" for px, py in points)
        self.parts.append(
            f'<polyline class="series" data-label="{esc(label)}" points="{coords}" fill="none" '
            f'stroke="{stroke}" stroke-width="{width}" stroke-linejoin="round">'
            f"<title>{esc(label)}</title></polyline>"
        )

    def band(
        self,
        xs: Sequence[float],
        lower: Sequence[float],
        upper: Sequence[float],
        fill: str,
        *,
        label: str,
    ) -> None:
        """A shaded region between ``lower`` and ``upper`` along ``xs``."""
        if not xs:
            return
        outline = [*zip(xs, upper, strict=True), *reversed(list(zip(xs, lower, strict=True)))]
        coords = " ".join(f"{_fmt(self.x(px))},{_fmt(self.y(py))}" for px, py in outline)
        self.parts.append(
            f'<polygon class="band" data-label="{esc(label)}" points="{coords}" fill="{fill}" '
            f'fill-opacity="0.18" stroke="none"><title>{esc(label)}</title></polygon>'
        )

    def point(self, x: float, y: float, stroke: str, *, kind: str, tooltip: str) -> None:
        """A marker: ``filled`` (circle), ``hollow`` (ring) or ``cross``; ``y`` in data units,
        or ``None``-like ``nan`` to sit on the x axis."""
        px = self.x(x)
        py = self.bottom if math.isnan(y) else self.y(y)
        tip = f"<title>{esc(tooltip)}</title>"
        if kind == "cross":
            r = 4
            self.parts.append(
                f'<path class="point point-{kind}" d="M{_fmt(px - r)},{_fmt(py - r)}'
                f"L{_fmt(px + r)},{_fmt(py + r)}M{_fmt(px - r)},{_fmt(py + r)}"
                f'L{_fmt(px + r)},{_fmt(py - r)}" stroke="{stroke}" stroke-width="1.8">{tip}</path>'
            )
            return
        fill = stroke if kind == "filled" else "#ffffff"
        opacity = ' fill-opacity="0.75"' if kind == "filled" else ""
        self.parts.append(
            f'<circle class="point point-{kind}" cx="{_fmt(px)}" cy="{_fmt(py)}" r="3.6" '
            f'fill="{fill}"{opacity} stroke="{stroke}" stroke-width="1.4">{tip}</circle>'
        )

    def vline(self, x: float, stroke: str, *, label: str) -> None:
        """A dashed vertical line across the plot area at ``x`` (data units)."""
        px = _fmt(self.x(x))
        self.parts.append(
            f'<line class="marker-line" x1="{px}" x2="{px}" y1="{_fmt(self.top)}" '
            f'y2="{_fmt(self.bottom)}" stroke="{stroke}" stroke-width="1.5" '
            f'stroke-dasharray="5 4"><title>{esc(label)}</title></line>'
        )

    def raw(self, markup: str) -> None:
        """Markup built by the caller from escaped parts."""
        self.parts.append(markup)

    def svg(self, css_class: str = "chart") -> str:
        return (
            f'<svg class="{esc(css_class)}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}" {FONT}><title>{esc(self.title)}</title>'
            + "".join(self.parts)
            + "</svg>"
        )


def legend(items: Sequence[tuple[str, str, str]], *, width: int = 0) -> str:
    """A one-row-per-entry SVG legend: (label, colour, mark: ``line``/``filled``/``hollow``/
    ``cross``/``band``)."""
    row = 18
    parts = []
    for i, (label, stroke, mark) in enumerate(items):
        y = 10 + i * row
        parts.append(_legend_mark(mark, stroke, y))
        parts.append(
            f'<text x="30" y="{y}" dominant-baseline="middle" font-size="12" '
            f'fill="{AXIS_COLOUR}">{esc(label)}</text>'
        )
    height = 8 + len(items) * row
    width = width or 40 + 8 * max((len(label) for label, _, _ in items), default=0)
    return (
        f'<svg class="legend" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>' + "".join(parts) + "</svg>"
    )


def _legend_mark(mark: str, stroke: str, y: float) -> str:
    if mark == "line":
        return f'<line x1="2" x2="24" y1="{y}" y2="{y}" stroke="{stroke}" stroke-width="2.5"/>'
    if mark == "dashed":
        return (
            f'<line x1="2" x2="24" y1="{y}" y2="{y}" stroke="{stroke}" stroke-width="1.5" '
            f'stroke-dasharray="5 4"/>'
        )
    if mark == "band":
        return (
            f'<rect x="2" y="{y - 6}" width="22" height="12" fill="{stroke}" fill-opacity="0.18"/>'
            f'<line x1="2" x2="24" y1="{y}" y2="{y}" stroke="{stroke}" stroke-width="2.5"/>'
        )
    if mark == "cross":
        return (
            f'<path d="M9,{y - 4}L17,{y + 4}M9,{y + 4}L17,{y - 4}" stroke="{stroke}" '
            f'stroke-width="1.8"/>'
        )
    fill = stroke if mark == "filled" else "#ffffff"
    return f'<circle cx="13" cy="{y}" r="4" fill="{fill}" stroke="{stroke}" stroke-width="1.4"/>'
