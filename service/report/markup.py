"""Text for the page: user input made inert, and figures written for people."""

from __future__ import annotations

import html
import math


def esc(value: object) -> str:
    """Text or attribute value made inert (quotes included).

    Plotly reads the labels it draws (titles, legend entries, hover text) as a small subset of
    HTML and turns entities back into characters, so the same escaping shows user input there
    as text too.
    """
    return html.escape(str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    """A figure for people: 4 significant digits, scientific only when very small or large."""
    if value is None or not math.isfinite(value):
        return "n/a" if value is None else str(value)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(1, digits - 2)}e}".replace("e-0", "e-").replace("e+0", "e")
