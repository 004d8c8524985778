"""Helpers of ``bench/warm_start_transfer.py``: the frozen test suite of tasks (``tasks``), the
reference pools (``pools``) and the measure (``measure``). The product does not import them.

FROZEN: ``tasks.py`` was committed before anything was computed on it; its SHA-256 is
:data:`FROZEN_SHA256`. The benchmark checks it, and the pools file records it.
"""

FROZEN_SHA256 = "bd852291b6291339f66a83943cda93329b2cda142bf52ed70b91921c5c200e1b"
"""SHA-256 of ``bench/transfer/tasks.py``, the test suite as frozen (issue 20)."""
