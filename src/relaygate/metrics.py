"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        )
        self.uncharged = Gauge(
            "relaygate_uncharged_micros",
            "Cost that exceeded a reservation plus the balance and could not be charged.",
            registry=self.registry,
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
        )
        self.upstream_ejections = Gauge(
            "relaygate_upstream_ejections",
            "Times each upstream was taken out of rotation since start-up.",
            ["model", "upstream"],
            registry=self.registry,
        )
        self._labels: dict[tuple[int, str], Counter] = {}
        self._answered: dict[tuple[str, str], Counter] = {}

    def responded(self, status: int, error_type: str = "") -> None:
        child = self._labels.get((status, error_type))
        if child is None:
            child = self._labels[(status, error_type)] = self.responses.labels(
                str(status), error_type
            )
        child.inc()

    def upstream_answered(self, model: str, upstream: str) -> None:
        child = self._answered.get((model, upstream))
        if child is None:
            child = self._answered[(model, upstream)] = self.upstream.labels(model, upstream)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
