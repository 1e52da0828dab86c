"""Logging set-up with a redaction filter: no key, client or upstream, reaches a log line.

Nothing in relaygate logs a key on purpose; this filter is the second line of defence, for
exceptions and third-party messages that might carry one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9_\-.=~+/]{6,})")
_REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    """Replaces anything key-like, and every configured secret, in a record's final text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _REDACTED)
        return _PATTERNS.sub(_REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> RedactingFilter:
    """One stderr handler on the root logger, redacting; uvicorn's loggers propagate to it."""
    root = logging.getLogger()
    redactor = RedactingFilter(secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    for old in list(root.handlers):
        if getattr(old, "_relaygate", False):
            root.removeHandler(old)
    handler._relaygate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return redactor


def add_secrets(redactor: RedactingFilter, secrets: Iterable[str]) -> None:
    redactor.secrets = sorted(
        set(redactor.secrets) | {s for s in secrets if len(s) >= 6}, key=len, reverse=True
    )
