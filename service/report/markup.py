"""Text for the page: user input made inert, and figures written for people."""

from __future__ import annotations

import html
import math


def esc(value: object) -> str:
    """Text or attribute value made inert (quotes included)."""
    return html.escape(str(value), quote=True)


def label(value: object) -> str:
    """Text for a plotly label (title, legend entry, hover text) or the page's text content.

    Plotly reads its labels as a small subset of HTML (``<b>``, ``<br>``, ``<a href>`` ...) and
    turns ``&amp;``, ``&lt;`` and ``&gt;`` back into characters, but not ``&quot;``: so ``<``,
    ``>`` and ``&`` are escaped and quotes are left as they are (no tag, no attribute).
    """
    return html.escape(str(value), quote=False)


def number(value: float | None, digits: int = 4) -> str:
    """A figure for people: 4 significant digits, scientific only when very small or large."""
    if value is None or not math.isfinite(value):
        return "n/a" if value is None else str(value)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}g}"
    return f"{value:.{max(1, digits - 2)}e}".replace("e-0", "e-").replace("e+0", "e")
