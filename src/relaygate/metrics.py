"""Prometheus metrics, one registry per app (so several apps can live in one test process).

Under ``relaygate serve --workers N`` the values live in prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, a folder the parent process makes and removes): every worker's
``/metrics`` then answers with the sum over all workers. A gauge says how its workers' values
combine (``multiprocess_mode``). With one process the registry is rendered as it is.

No ``_created`` series: they are left out of what is rendered (per registry; the library's
global switch is not touched, so other apps in the process keep theirs).
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from relaygate.access import Access

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's variable: set, the values are kept in files in that folder."""
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_KINDS = ("input", "output", "cached", "reasoning", "cache_write")
PUBLISH_SECONDS = 1.0
"""Under ``--workers N``, how stale another worker's request metrics may be in a scrape."""


def multiprocess_dir() -> str | None:
    """The multiprocess folder this process writes its values to, if any."""
    return os.environ.get(MULTIPROCESS_DIR) or None


class _WithoutCreated:
    """A registry's metrics without their ``_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            samples = [s for s in metric.samples if not s.name.endswith("_created")]
            if len(samples) != len(metric.samples):
                metric.samples = samples
            yield metric


class _Pending:
    """Observations of one histogram not yet published: counts per bucket (the last one
    ``+Inf``) and their sum. Observing is a ``bisect`` and two additions, made in
    :meth:`Metrics.request_done` itself: the library's ``observe`` costs many times that,
    and runs for every request."""

    __slots__ = ("bounds", "child", "counts", "sum")

    def __init__(self, child: Any, bounds: tuple[float, ...]) -> None:
        self.child = child
        self.bounds = tuple(float(bound) for bound in bounds)
        """As floats: ``bisect`` compares a float with a float faster than with an int."""
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def publish(self) -> None:
        counts = self.counts
        if any(counts):
            # the child's own values (its buckets, ``+Inf`` last, and its sum): the library has
            # no call that adds several observations at once (``observe`` once per request,
            # when published, would cost what gathering saves)
            for value, count in zip(self.child._buckets, counts, strict=True):
                if count:
                    value.inc(count)
            self.child._sum.inc(self.sum)
            self.counts = [0] * len(counts)
            self.sum = 0.0


class _PerRoute:
    """The request metrics of one (model, upstream): gathered as plain numbers on the hot
    path, published to the library's children when read (:meth:`Metrics.publish`)."""

    __slots__ = ("cost", "duration", "first_token", "totals", "upstream")

    def __init__(self, metrics: Metrics, model: str, upstream: str) -> None:
        self.duration = _Pending(metrics.duration.labels(model, upstream), DURATION_BUCKETS)
        self.first_token = _Pending(metrics.first_token.labels(model, upstream), LATENCY_BUCKETS)
        self.upstream = _Pending(metrics.upstream_latency.labels(model, upstream), LATENCY_BUCKETS)
        self.cost = [metrics.cost.labels(model, upstream)] + [
            metrics.tokens.labels(model, upstream, kind) for kind in TOKEN_KINDS
        ]
        self.totals = [0] * len(self.cost)
        """Not yet published: the cost, then the tokens of each kind."""

    def publish(self) -> None:
        self.duration.publish()
        self.first_token.publish()
        self.upstream.publish()
        totals = self.totals
        if any(totals):
            for child, total in zip(self.cost, totals, strict=True):
                if total:
                    child.inc(total)
            self.totals = [0] * len(totals)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared = multiprocess_dir() is not None
        """The values are the workers' together (multiprocess mode)."""
        self.routing = RoutingMetrics(self.registry)
        self.responses = Counter(
            "relaygate_responses",
            "Responses sent, by HTTP status and error type.",
            ["status", "type"],
            registry=self.registry,
        )
        self.upstream = Counter(
            "relaygate_upstream_answers",
            "Requests an upstream accepted, by model and upstream.",
            ["model", "upstream"],
            registry=self.registry,
        )
        self.ledger_pending = Gauge(
            "relaygate_ledger_pending_rows",
            "Settled requests waiting to be written to the ledger.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.uncharged = Gauge(
            "relaygate_uncharged_micros",
            "Cost that exceeded a reservation plus the balance and could not be charged.",
            registry=self.registry,
            multiprocess_mode="sum",
        )
        self.without_redis = Counter(
            "relaygate_limit_decisions_without_redis",
            "Rate-limit decisions made in-process because Redis could not be reached.",
            registry=self.registry,
        )
        self.redis_failures = Counter(
            "relaygate_redis_failures",
            "Redis calls that failed (admission, settlement, ledger bookkeeping).",
            ["operation"],
            registry=self.registry,
        )
        self.upstream_state = Gauge(
            "relaygate_upstream_state",
            "1 for the state each upstream is in (healthy, ejected, probing), 0 for the others.",
            ["model", "upstream", "state"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.upstream_ejections = Gauge(
            "relaygate_upstream_ejections",
            "Times each upstream was taken out of rotation since start-up.",
            ["model", "upstream"],
            registry=self.registry,
            multiprocess_mode="sum",
        )
        self._labels: dict[tuple[int, str], Counter] = {}
        self._answers: dict[tuple[str, str], Counter] = {}
        self._responded: dict[tuple[int, str], int] = {}
        """Responses not yet published, by (status, error type)."""
        self._answered: dict[tuple[str, str], int] = {}
        """Upstream answers not yet published, by (model, upstream)."""
        self._request_metrics()

    def _request_metrics(self) -> None:
        """What each request adds (:meth:`request_done`): durations, tokens, cost."""
        labels = ["model", "upstream"]
        self.duration = Histogram(
            "relaygate_request_duration_seconds",
            "Requests of the API from arrival to the end of the answer, by model and upstream"
            " (both empty for requests refused before a model was known).",
            labels,
            registry=self.registry,
            buckets=DURATION_BUCKETS,
        )
        self.first_token = Histogram(
            "relaygate_time_to_first_token_seconds",
            "Streamed requests from arrival to the first part of the answer from the upstream.",
            labels,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.upstream_latency = Histogram(
            "relaygate_upstream_latency_seconds",
            "From sending a request upstream to its answer's headers (retries and fallbacks"
            " included).",
            labels,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.tokens = Counter(
            "relaygate_tokens",
            "Tokens of settled requests by kind (input, output, cached, reasoning,"
            " cache_write), as charged.",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "relaygate_cost_micros",
            "What settled requests were charged, in micro-units of the currency.",
            labels,
            registry=self.registry,
        )
        self._routes: dict[tuple[str | None, str | None], _PerRoute] = {}
        self._timer: asyncio.TimerHandle | None = None

    def _route(self, model: str | None, upstream: str | None) -> _PerRoute:
        route = self._routes[(model, upstream)] = _PerRoute(self, model or "", upstream or "")
        return route

    def request_done(self, access: Access, ended: float) -> None:
        """One request of the API ended (see :mod:`relaygate.access`). It runs for every
        request: each histogram's ``observe`` is written out here (a ``bisect`` and two
        additions), not called."""
        # A model a client named and the catalog does not have is not a label value.
        model = access.model if access.model_known else None
        route = self._routes.get((model, access.upstream)) or self._route(model, access.upstream)
        started = access.started
        seconds = ended - started
        pending = route.duration
        pending.counts[bisect_left(pending.bounds, seconds)] += 1  # ``le``: bound >= value
        pending.sum += seconds
        if access.upstream_answered:
            seconds = access.upstream_answered - access.upstream_called
            pending = route.upstream
            pending.counts[bisect_left(pending.bounds, seconds)] += 1
            pending.sum += seconds
        if access.first_token:
            seconds = access.first_token - started
            pending = route.first_token
            pending.counts[bisect_left(pending.bounds, seconds)] += 1
            pending.sum += seconds
        if access.cost is not None:
            totals = route.totals
            totals[0] += access.cost
            totals[1] += access.input_tokens
            totals[2] += access.output_tokens
            totals[3] += access.cached_tokens
            totals[4] += access.reasoning_tokens
            totals[5] += access.cache_write_tokens

    def publish(self) -> None:
        """Hand what requests gathered to the library (before a scrape; every
        :data:`PUBLISH_SECONDS` under ``--workers N``, where any worker may be scraped)."""
        for route in self._routes.values():
            route.publish()
        responded, self._responded = self._responded, {}
        for key, count in responded.items():
            self._response_child(key).inc(count)
        answered, self._answered = self._answered, {}
        for pair, count in answered.items():
            self._answer_child(pair).inc(count)

    def responded(self, status: int, error_type: str = "") -> None:
        """A response was sent: counted as a plain number, published with the request metrics
        (under ``--workers N`` at once: a scrape of any worker shows every worker's)."""
        key = (status, error_type)
        if self.shared:
            self._response_child(key).inc()
            return
        counts = self._responded
        counts[key] = counts.get(key, 0) + 1

    def upstream_answered(self, model: str, upstream: str) -> None:
        """An upstream accepted a request: counted as :meth:`responded` counts."""
        route = (model, upstream)
        if self.shared:
            self._answer_child(route).inc()
            return
        counts = self._answered
        counts[route] = counts.get(route, 0) + 1

    def _response_child(self, key: tuple[int, str]) -> Counter:
        child = self._labels.get(key)
        if child is None:
            child = self._labels[key] = self.responses.labels(str(key[0]), key[1])
        return child

    def _answer_child(self, route: tuple[str, str]) -> Counter:
        child = self._answers.get(route)
        if child is None:
            child = self._answers[route] = self.upstream.labels(*route)
        return child

    def render(self) -> bytes:
        """The text exposition: this registry's, or every worker's together."""
        self.publish()
        if self.shared:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(_WithoutCreated(self.registry))

    def start(self) -> None:
        """Under ``--workers N``: publish every :data:`PUBLISH_SECONDS` (from the event loop)."""
        if self.shared:
            loop = asyncio.get_running_loop()

            def tick() -> None:
                self.publish()
                self._timer = loop.call_later(PUBLISH_SECONDS, tick)

            self._timer = loop.call_later(PUBLISH_SECONDS, tick)

    def close(self) -> None:
        """This worker is ending: what it gathered is published, its live gauges leave the
        sum."""
        if self._timer is not None:
            self._timer.cancel()
        self.publish()
        if self.shared:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# --- routing: answers cut after they started, attempts relaygate paid for and did not charge ---


class RoutingMetrics:
    """What the router reports (see :mod:`relaygate.routing.router`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.cut = Counter(
            "relaygate_upstream_cut_answers",
            "Answers an upstream started and then broke off (a cut, an error or an unreadable"
            " body after it accepted the request), by model, upstream and whether streamed.",
            ["model", "upstream", "stream"],
            registry=registry,
        )
        self.unbilled_attempts = Counter(
            "relaygate_unbilled_attempts",
            "Non-streamed attempts cut after the upstream started them: the upstream may bill"
            " them, the key is not charged for them.",
            ["model", "upstream"],
            registry=registry,
        )
        self.unbilled_tokens = Counter(
            "relaygate_unbilled_tokens",
            "Tokens of those attempts (the prompt estimate plus any completion tokens received).",
            ["model", "upstream"],
            registry=registry,
        )

    def answer_cut(self, model: str, upstream: str, stream: bool) -> None:
        self.cut.labels(model, upstream, "true" if stream else "false").inc()

    def unbilled(self, model: str, upstream: str, tokens: int) -> None:
        self.unbilled_attempts.labels(model, upstream).inc()
        self.unbilled_tokens.labels(model, upstream).inc(tokens)
