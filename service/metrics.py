"""Prometheus metrics of one app: its own registry (never the global default one).

- ``hpt_studies{status}``, ``hpt_trials{state}``, ``hpt_workers_live``, ``hpt_trial_slots_free``
  and ``hpt_database_up``: read from the database at scrape time by :class:`ServiceCollector`.
- ``hpt_http_requests_total{method,route,status}`` and
  ``hpt_http_request_duration_seconds{method,route}``: counted by :class:`RequestMetricsMiddleware`.
  ``route`` is the route template (``/api/v1/studies/{name}``), never the raw path, so study names
  never become label values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store.database import Database
from service.studies.progress import service_counts

log = logging.getLogger(__name__)

# Any other method is counted as "OTHER": clients must not be able to invent label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


class HttpMetrics:
    """The registry of one app and its HTTP request metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hpt_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "hpt_http_request_duration_seconds",
            "Seconds spent answering HTTP requests, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


class RequestMetricsMiddleware:
    """ASGI middleware that counts every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            self.metrics.observe(
                method=scope["method"],
                route=route,
                status=status,
                seconds=time.perf_counter() - started,
            )


class ServiceCollector(Collector):
    """Studies, trials, workers and free slots, queried from the database on each scrape."""

    def __init__(self, *, db: Database, heartbeat_interval: int) -> None:
        self.db = db
        self.heartbeat_interval = heartbeat_interval

    def describe(self) -> list[Metric]:
        # Names only: keeps registration from querying the database.
        return [
            GaugeMetricFamily("hpt_database_up", ""),
            GaugeMetricFamily("hpt_studies", "", labels=["status"]),
            GaugeMetricFamily("hpt_trials", "", labels=["state"]),
            GaugeMetricFamily("hpt_workers_live", ""),
            GaugeMetricFamily("hpt_trial_slots_free", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        try:
            counts = service_counts(self.db, heartbeat_interval=self.heartbeat_interval)
        except sa.exc.SQLAlchemyError:
            log.warning("metrics: the database could not be read", exc_info=True)
            yield GaugeMetricFamily("hpt_database_up", "1 when the database answers.", value=0)
            return
        yield GaugeMetricFamily("hpt_database_up", "1 when the database answers.", value=1)
        studies = GaugeMetricFamily("hpt_studies", "Studies by status.", labels=["status"])
        for status, count in counts.studies_by_status.items():
            studies.add_metric([status], count)
        yield studies
        trials = GaugeMetricFamily("hpt_trials", "Trials by state.", labels=["state"])
        for state, count in counts.trials_by_state.items():
            trials.add_metric([state], count)
        yield trials
        yield GaugeMetricFamily(
            "hpt_workers_live", "Workers seen within 3 heartbeats.", value=counts.live_workers
        )
        yield GaugeMetricFamily(
            "hpt_trial_slots_free",
            "Trial slots of queued and running studies that no trial holds yet.",
            value=counts.free_slots,
        )
