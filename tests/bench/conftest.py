"""The benchmarks are scripts in ``bench/``, run as ``python bench/NAME.py``; their tests import
them the same way, with ``bench/`` on the path."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
