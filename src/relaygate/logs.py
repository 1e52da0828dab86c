"""Logging set-up with a redacting, escaping filter on the one handler.

Nothing in relaygate logs a key on purpose; the filter is the second line of defence, for
exceptions, upstream text and third-party messages that might carry one. Every record's final
text goes through the process's :data:`~relaygate.redaction.REDACTOR` (every configured secret in
every form, and anything key-shaped), and is escaped so that it stays on its line: a newline in
upstream text cannot forge a log line. A traceback keeps its lines, each indented, so a line that
starts at the left margin is always the start of a record.

``log_level`` applies to relaygate's own loggers (``relaygate.*``, and the HTTP server's start-up
and shutdown lines, shown as ``relaygate.server``); libraries (aiosqlite, SQLAlchemy, asyncio,
redis, aiohttp, ...) log warnings and errors only, unless ``log_debug_loggers`` names them.

The request log (``relaygate.access``, see :mod:`relaygate.access`) is at ``info`` whatever
``log_level`` is, unless ``request_log`` is off. ``log_format: json`` writes every record as one
JSON object a line: ``time``, ``level``, ``logger``, ``message`` (and ``exception``), plus a
request's fields.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from relaygate.redaction import REDACTOR, Redactor, escape_controls


def _block(text: str, redactor: Redactor) -> str:
    """A multi-line block (a traceback, a stack), redacted, each line escaped and indented."""
    return "\n".join("  " + escape_controls(line) for line in redactor.redact(text).split("\n"))


class RedactingFilter(logging.Filter):
    """Redacts and escapes a record's final text (its message, traceback and stack)."""

    def __init__(self, secrets: Iterable[str] = (), redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor
        redactor.add(secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return self.redactor.secrets

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_relaygate_clean", False):
            return True  # already done (the record reached a second handler)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit the format
            message = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = escape_controls(self.redactor.redact(message))
        record.args = None
        if record.exc_text:
            record.exc_text = _block(record.exc_text, self.redactor)
        if record.stack_info:
            record.stack_info = _block(record.stack_info, self.redactor)
        record._relaygate_clean = True
        record.name = _SHOWN_AS.get(record.name, record.name)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a record (``log_format: json``)."""

    _encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        out: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": "request" if fields is not None else record.getMessage(),
        }
        if fields is not None:
            out.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return self._encode(out).decode()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(int(record.created), int(record.msecs))

    @staticmethod
    def stamp(second: int, millis: int) -> str:
        """UTC, ISO 8601, to the millisecond."""
        return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """``date time LEVEL logger: message``, the date and time formatted once a second (the
    request log writes a line per request)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # what the format string makes, without its general machinery (a line per request)
        record.message = message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(int(record.created), int(record.msecs))

    def stamp(self, second: int, millis: int) -> str:
        """Local time, to the millisecond; the date and time formatted once a second."""
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._stamp},{millis:03d}"


class RequestLines:
    """The request log's lines, written to the handler's stream once per event-loop turn.

    A request's line is clean already (keys named by id, client text redacted and cut), so it
    does not need the handler's filter; and a line per request through ``logging``'s general
    machinery (the logger hierarchy, the handler's lock, a write and a flush each) cost more
    than the rest of the request log together. The lines of one loop turn are joined and
    written in one write, before the loop waits for I/O again (``call_soon``); outside a
    running loop, and at exit, at once. Format and time stamps are the handler's formatter's
    (:class:`TextFormatter` or :class:`JsonFormatter`)."""

    def __init__(self, handler: logging.StreamHandler[Any], json: bool) -> None:
        self.handler = handler
        self.json = json
        self.pending: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        """The loop the last flush was scheduled on, and its thread."""
        self.thread = 0
        formatter = handler.formatter
        self.text = formatter if isinstance(formatter, TextFormatter) else TextFormatter()

    def write(self, message: str, fields: dict[str, Any] | None) -> None:
        now = time.time_ns()
        second = now // 1_000_000_000
        if self.json:
            millis = now // 1_000_000 % 1000
            out: dict[str, object] = {
                "time": JsonFormatter.stamp(second, millis),
                "level": "INFO",
                "logger": ACCESS_LOGGER,
                "message": "request",
            }
            if fields is not None:
                out.update(fields)
            line = JsonFormatter._encode(out).decode()
        else:
            text = self.text
            if second != text._second:
                text.stamp(second, 0)  # the formatter's date and time of this second
            line = f"{text._stamp},{_MILLIS[now // 1_000_000 % 1000]} {_ACCESS_HEAD}{message}"
        pending = self.pending
        pending.append(line)
        if len(pending) == 1:
            loop = self.loop
            if loop is not None and loop.is_running() and threading.get_ident() == self.thread:
                loop.call_soon(self.flush)
            else:
                self._schedule()

    def _schedule(self) -> None:
        """Flush at the end of this loop turn, or now when no loop runs in this thread. The
        loop is remembered: ``asyncio.get_running_loop()`` asks the system for the process's
        id (``getpid``) each time, a system call per request when requests come one by
        one."""
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop running in this thread: now
            self.loop = None
            self.flush()
            return
        self.thread = threading.get_ident()
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        pending.append("")  # the last line's end
        text = "\n".join(pending)
        pending.clear()
        handler = self.handler
        # as logging does, a broken stream does not fail the request
        try:
            with handler.lock or contextlib.nullcontext():
                stream = handler.stream
                stream.write(text)
                stream.flush()  # what ``handler.flush()`` does, under the lock held
        except Exception:  # noqa: S110
            pass


_MILLIS = tuple(f"{millis:03d}" for millis in range(1000))
"""A time stamp's milliseconds, as the text format writes them."""


REQUEST_LINES: RequestLines | None = None
"""Set by :func:`configure_logging` (the process's one handler); ``None``: records go through
``logging`` (an app embedded elsewhere, tests capturing records)."""


def _flush_request_lines() -> None:
    if REQUEST_LINES is not None:
        REQUEST_LINES.flush()


atexit.register(_flush_request_lines)

ACCESS_LOGGER = "relaygate.access"
_ACCESS_HEAD = f"INFO {ACCESS_LOGGER}: "
_SHOWN_AS = {"uvicorn": "relaygate.server", "uvicorn.error": "relaygate.server"}
"""uvicorn's start-up and shutdown lines come from ``uvicorn.error``, errors or not."""
OWN_LOGGERS = ("relaygate", "uvicorn", "uvicorn.error")
"""The loggers ``log_level`` sets; every other logger stays at warning or above."""
LIBRARY_FLOOR = logging.WARNING


def configure_logging(
    level: str,
    secrets: Iterable[str] = (),
    extra_loggers: Iterable[str] = (),
    log_format: str = "text",
    request_log: bool = True,
) -> RedactingFilter:
    """One stderr handler on the root logger, redacting; uvicorn's loggers propagate to it.

    ``level`` is given to relaygate's own loggers and to ``extra_loggers`` (libraries named in
    ``log_debug_loggers``); ``relaygate.access`` is at ``info`` while ``request_log`` is on,
    else off. The root logger, hence every other library, stays at warning (or
    ``level``, when that is higher). ``secrets`` (see
    :func:`relaygate.redaction.configured_secrets`) are registered with the process's redactor,
    which error messages sent to clients use too."""
    root = logging.getLogger()
    redactor = RedactingFilter(secrets)
    handler = logging.StreamHandler()
    json = log_format == "json"
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(redactor)
    for old in list(root.handlers):
        if getattr(old, "_relaygate", False):
            root.removeHandler(old)
    handler._relaygate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    number = logging.getLevelName(level.upper())
    root.setLevel(max(number, LIBRARY_FLOOR))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    for name in (*OWN_LOGGERS, *extra_loggers):
        logging.getLogger(name).setLevel(number)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if request_log else logging.CRITICAL + 1)
    global REQUEST_LINES
    _flush_request_lines()
    REQUEST_LINES = RequestLines(handler, json)
    return redactor


def add_secrets(redactor: RedactingFilter, secrets: Iterable[str]) -> None:
    redactor.redactor.add(secrets)
