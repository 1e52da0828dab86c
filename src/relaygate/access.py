"""The request log: one line per request on the ``relaygate.access`` logger, and the request
metrics taken from the same record.

:class:`Access` is created by the app for each request it logs and filled along the way: the
pipeline names the key and the model, admission's settlement adds the tokens, the cost and the
upstream, a stream its time to first token; the app adds the status as the request ends and
hands it to :meth:`RequestLog.done`.

A line never holds a key or any secret: it names keys by id, and the few values a client
chooses (an unknown route's path, an unknown model's name) are redacted and cut short. Values
are written ``name=value``, or ``name="..."`` with quotes, backslashes and control characters
escaped when they hold anything else than a plain token, so that no value can forge a field
or a line. With ``log_format: json`` the fields are the record's own (one JSON object a line).

Logged: every request of the API (``/v1/...``) and every request answered with an error before a
route was found (404, 405, and the 400/408/431 the connection protocol answers before the app
sees a request). Not logged: ``/health``, ``/health/details`` and ``/metrics`` (probes and
scrapes, every few seconds), the admin API and the console (the audit log records their
changes).
"""

from __future__ import annotations

import logging
import re
from time import perf_counter, time_ns
from typing import TYPE_CHECKING, Any, ClassVar

from relaygate import logs
from relaygate.redaction import REDACTOR, escape_controls

if TYPE_CHECKING:
    from relaygate.accounting.admission import Ticket
    from relaygate.metrics import Metrics
    from relaygate.providers.base import TokenUsage
    from relaygate.store.records import KeyRecord

ACCESS = logging.getLogger("relaygate.access")
SCOPE_KEY = "relaygate.access"
"""Where the request's :class:`Access` is found in its ASGI scope."""
UNLOGGED = frozenset(("/health", "/health/details", "/metrics"))
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+\-]+").fullmatch
_CLIENT_TEXT = 120
"""Most characters of a value the client chose (a path, a model name) that are logged."""


class Access:
    """What one request did, filled along the way (``None`` or 0: not known or not reached)."""

    __slots__ = (
        "cache_write_tokens",
        "cached_tokens",
        "cost",
        "error",
        "first_token",
        "input_tokens",
        "key",
        "method",
        "model",
        "model_known",
        "outcome",
        "output_tokens",
        "path",
        "reasoning_tokens",
        "request_id",
        "started",
        "stream",
        "upstream",
        "upstream_answered",
        "upstream_called",
    )

    def __init__(self, method: str, path: str) -> None:
        self.started = perf_counter()
        self.method = method
        self.path = path
        self.key: KeyRecord | None = None
        self.request_id: str | None = None
        self.model: str | None = None
        self.model_known = False
        """``model`` is a catalog model's name (else the client's, redacted when logged)."""
        self.stream = False
        self.error: str | None = None
        self.outcome: str | None = None
        """The ledger's status of a settled request (``ok``, ``upstream_error``, ...)."""
        self.upstream: str | None = None
        self.upstream_called = 0.0
        self.upstream_answered = 0.0
        self.first_token = 0.0
        self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.reasoning_tokens = self.cache_write_tokens = 0
        self.cost: int | None = None

    def settled(
        self, ticket: Ticket, usage: TokenUsage, cost: int, outcome: str, upstream: str
    ) -> None:
        """The request was settled (admission's settlement): what it used and was charged."""
        self.request_id = ticket.request_id
        self.model = ticket.model.name
        self.model_known = True
        self.outcome = outcome
        self.upstream = upstream or None
        self.cost = cost
        self.input_tokens = usage.prompt_tokens
        self.output_tokens = usage.completion_tokens
        self.cached_tokens = usage.cached_tokens
        self.reasoning_tokens = usage.reasoning_tokens
        self.cache_write_tokens = usage.cache_write_tokens + usage.cache_write_1h_tokens

    def line(self, status: int, ended: float) -> str:
        """The record as a text line: what :func:`text_line` makes of :meth:`fields`, built
        directly (it runs for every request). Ids and error types are relaygate's own (plain
        tokens); names from the config are checked once and remembered.

        A request that was settled after its upstream answered, without an error (nearly
        every request), is one f-string (cheaper than a ``%`` of a tuple, or a list of parts
        joined); any other takes :meth:`_any_line`."""
        key = self.key
        model = self.model
        if (
            self.cost is None
            or self.error is not None
            or not self.upstream_answered
            or key is None
            or self.request_id is None
            or self.upstream is None
            or self.outcome is None
            or not self.model_known
            or model is None
        ):
            return self._any_line(status, ended)
        started = self.started
        route = (self.method, self.path, model, self.upstream)
        account = f" account_id={key.account_id}" if key.account_id else ""
        ttft = f" ttft_us={int((self.first_token - started) * 1e6)}" if self.first_token else ""
        return (
            f"request_id={self.request_id} key_id={key.id}{account}"
            f" {_ROUTES.get(route) or _route(route)} status={status}"
            f" outcome={self.outcome} stream={'true' if self.stream else 'false'}"
            f" latency_us={int((ended - started) * 1e6)}"
            f" upstream_us={int((self.upstream_answered - self.upstream_called) * 1e6)}{ttft}"
            f" input_tokens={self.input_tokens} output_tokens={self.output_tokens}"
            f" cached_tokens={self.cached_tokens} reasoning_tokens={self.reasoning_tokens}"
            f" cache_write_tokens={self.cache_write_tokens} cost_micros={self.cost}"
        )

    def _any_line(self, status: int, ended: float) -> str:
        """:meth:`line` of any record, field by field."""
        parts = []
        if self.request_id is not None:
            parts.append(f"request_id={self.request_id}")
        key = self.key
        if key is not None:
            parts.append(
                f"key_id={key.id} account_id={key.account_id}"
                if key.account_id
                else f"key_id={key.id}"
            )
        parts.append(f"method={_known(self.method)} path={_known(self.path)}")
        model = self.model
        if model is not None:
            shown = _known(model) if self.model_known else _value(client_text(model))
            parts.append(f"model={shown}")
        if self.upstream is not None:
            parts.append(f"upstream={_known(self.upstream)}")
        parts.append(f"status={status}")
        if self.error is not None:
            parts.append(f"error={self.error}")
        if self.outcome is not None:
            parts.append(f"outcome={self.outcome} stream={'true' if self.stream else 'false'}")
        parts.append(f"latency_us={int((ended - self.started) * 1e6)}")
        if self.upstream_answered:
            parts.append(
                f"upstream_us={int((self.upstream_answered - self.upstream_called) * 1e6)}"
            )
        if self.first_token:
            parts.append(f"ttft_us={int((self.first_token - self.started) * 1e6)}")
        if self.cost is not None:
            parts.append(
                f"input_tokens={self.input_tokens} output_tokens={self.output_tokens}"
                f" cached_tokens={self.cached_tokens} reasoning_tokens={self.reasoning_tokens}"
                f" cache_write_tokens={self.cache_write_tokens} cost_micros={self.cost}"
            )
        return " ".join(parts)

    def fields(self, status: int, ended: float) -> dict[str, Any]:
        """The record's fields, in the order a line shows them (absent ones left out)."""
        out: dict[str, Any] = {}
        if self.request_id is not None:
            out["request_id"] = self.request_id
        key = self.key
        if key is not None:
            out["key_id"] = key.id
            if key.account_id:
                out["account_id"] = key.account_id
        out["method"] = self.method
        out["path"] = self.path
        model = self.model
        if model is not None:
            out["model"] = model if self.model_known else client_text(model)
        if self.upstream is not None:
            out["upstream"] = self.upstream
        out["status"] = status
        if self.error is not None:
            out["error"] = self.error
        if self.outcome is not None:
            out["outcome"] = self.outcome
            out["stream"] = self.stream
        out["latency_us"] = int((ended - self.started) * 1e6)
        if self.upstream_answered:
            out["upstream_us"] = int((self.upstream_answered - self.upstream_called) * 1e6)
        if self.first_token:
            out["ttft_us"] = int((self.first_token - self.started) * 1e6)
        if self.cost is not None:
            out["input_tokens"] = self.input_tokens
            out["output_tokens"] = self.output_tokens
            out["cached_tokens"] = self.cached_tokens
            out["reasoning_tokens"] = self.reasoning_tokens
            out["cache_write_tokens"] = self.cache_write_tokens
            out["cost_micros"] = self.cost
        return out


def client_text(text: str) -> str:
    """A value the client chose, as it may be logged: redacted, cut short."""
    return REDACTOR.redact(text[:_CLIENT_TEXT])


def _value(value: object) -> str:
    if type(value) is str:
        if _PLAIN(value):
            return value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escape_controls(escaped)}"'
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


_KNOWN: dict[str, str] = {}
_KNOWN_MOST = 1024


def _known(value: str) -> str:
    """:func:`_value` of a value from a small set (a route, a model, an upstream), remembered."""
    shown = _KNOWN.get(value)
    if shown is None:
        shown = _value(value)
        if len(_KNOWN) < _KNOWN_MOST:  # a client's unknown paths do not grow it without end
            _KNOWN[value] = shown
    return shown


_ROUTES: dict[tuple[str, str, str, str], str] = {}


def _route(route: tuple[str, str, str, str]) -> str:
    """``method=... path=... model=... upstream=...`` of a settled request (a route of the
    API, a catalog model, a configured upstream: a small set), remembered in :data:`_ROUTES`."""
    method, path, model, upstream = route
    shown = (
        f"method={_known(method)} path={_known(path)} model={_known(model)}"
        f" upstream={_known(upstream)}"
    )
    if len(_ROUTES) < _KNOWN_MOST:
        _ROUTES[route] = shown
    return shown


def text_line(fields: dict[str, Any]) -> str:
    """``name=value`` pairs on one line (see the module docstring for the escaping)."""
    return " ".join([f"{name}={_value(value)}" for name, value in fields.items()])


class RequestLog:
    """Ends each request: its metrics, and its line when the request log is on."""

    def __init__(self, metrics: Metrics, enabled: bool, json: bool = False) -> None:
        self.metrics = metrics
        self.enabled = enabled
        self.json = json
        """``log_format: json``: records carry their fields (the JSON formatter writes them)."""

    def done(self, access: Access, status: int) -> None:
        ended = perf_counter()
        self.metrics.request_done(access, ended)
        if self.enabled and ACCESS.isEnabledFor(logging.INFO):
            if self.json:
                emit("request", access.fields(status, ended))
                return
            lines = logs.REQUEST_LINES
            if lines is not None:  # what :func:`emit` does, without a call more per request
                lines.write(access.line(status, ended), None)
            else:
                emit(access.line(status, ended), None)


class _Record(logging.LogRecord):
    """A request's record, made for less than ``LogRecord()`` costs: what does not change
    from one request to the next (the logger, the level, no caller's frame, this process
    and thread) is copied from a template made by ``makeRecord`` once per process."""

    template: ClassVar[dict[str, Any] | None] = None

    def __init__(self, message: str) -> None:
        template = _Record.template
        if template is None:
            made = ACCESS.makeRecord(ACCESS.name, logging.INFO, "", 0, "", (), None)
            template = _Record.template = {**vars(made), "taskName": None}
        self.__dict__.update(template)
        now = time_ns()
        self.msg = message
        self.created = now / 1e9
        self.msecs = float(now % 1_000_000_000 // 1_000_000)
        self.relativeCreated = (now - _STARTED) / 1e6


_STARTED: int = int(logging._startTime * 1e9)  # type: ignore[attr-defined]


def emit(message: str, fields: dict[str, Any] | None) -> None:
    """Log one request's record. Its text needs no redaction (keys are named by id, what the
    client chose is redacted already), so the handler's filter lets it through as it is.
    Under :func:`relaygate.logs.configure_logging`, straight to its handler's stream, once per
    loop turn (:class:`relaygate.logs.RequestLines`)."""
    lines = logs.REQUEST_LINES
    if lines is not None:
        lines.write(message, fields)
        return
    record = _Record(message)
    record._relaygate_clean = True
    if fields is not None:
        record.fields = fields
    ACCESS.handle(record)


def refused(status: int, error_type: str) -> None:
    """A request the connection protocol answered before the app saw it (a head too large,
    unparseable or too slow): logged with what is known, its status and error type."""
    if ACCESS.isEnabledFor(logging.INFO):
        fields: dict[str, Any] = {"status": status, "error": error_type}
        emit(text_line(fields), fields)
