"""The one redactor: no configured secret, in any form, and nothing key-shaped reaches a client
or a log line.

Every secret relaygate is configured with (the upstreams' ``api_key``, the database and Redis
passwords, ``operator_token``, ``alert_webhook_secret``) is registered with :data:`REDACTOR`,
which replaces it in the forms an upstream, a library or a traceback could echo it in: raw,
URL-encoded, JSON-escaped, hex, and base64 (standard and URL-safe) at each of the three byte
alignments, so that it is also found inside the base64 of a longer text such as the
``user:key`` of basic auth. Key-shaped tokens (``sk-...``, ``AIza...``, ``Bearer ...``, a
URL's password) go too, configured or not.

Two uses:

- :meth:`Redactor.redact` for log lines, and :meth:`Redactor.redact_configured` for every
  error message rendered to a client;
- :meth:`Redactor.excerpt` for text an upstream wrote that is shown to a client: control
  characters removed, redacted (also long random-looking tokens, such as an Azure key relaygate
  was not told about), and cut to a short excerpt.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from relaygate.settings import Settings

REDACTED = "[redacted]"
MIN_SECRET = 8
"""Shorter values are not redacted as bare words (they would match ordinary text)."""
EXCERPT = 200
"""Most characters of upstream text a client is shown."""
_MIN_BASE64 = 8
_SCAN = 4096
"""Upstream text beyond this is never looked at (an excerpt is much shorter)."""

# Key-shaped tokens, whoever's they are.
_KEY_SHAPED = (
    r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*]{6,}"  # OpenAI, Anthropic (sk-ant-...), DeepSeek, ...
    r"|(?<![A-Za-z0-9])AIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9_\-.=~+/]{6,}"
    r"|(?i:\b(?:api[-_ ]?)?key\s*[=:]\s*)[^\s,;&)\"']{6,}"
    r"|(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"  # a URL's user:password
)
# Long random-looking tokens (excerpts of upstream text only): an unconfigured key or a token.
_RANDOM_LOOKING = (
    r"|(?<![A-Za-z0-9+/_\-])(?=[A-Za-z0-9+/_\-]*[0-9])(?=[A-Za-z0-9+/_\-]*[A-Za-z])"
    r"[A-Za-z0-9+/_\-]{32,}={0,2}"
)
# Removed from upstream text before anything else (a key split by one is found joined again).
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff]"
)
_BREAKS = re.compile("[\t\n\r\u2028\u2029]+")
# Escaped in log lines: a newline (or any control character) must not start a forged line.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _base64_cores(data: bytes) -> set[str]:
    """The part of the base64 of any text holding ``data`` that depends on ``data`` alone,
    for each of the three alignments ``data`` can start at."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        whole = (offset + len(data)) // 3 * 4  # the groups holding only known bytes...
        core = encoded[4 if offset else 0 : whole]  # ...without the first, if it is shared
        if len(core) >= _MIN_BASE64:
            cores |= {core, core.translate(str.maketrans("+/", "-_"))}
    return cores


def secret_forms(secret: str) -> set[str]:
    """Every form of ``secret`` that is redacted."""
    if len(secret) < MIN_SECRET:
        return set()
    escaped = json.dumps(secret)[1:-1]
    forms = {
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(secret, ensure_ascii=False)[1:-1],
        # Go's encoding/json (Ollama, many OpenAI-compatible servers) also escapes <, > and &
        escaped.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
        secret.encode().hex(),
    }
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms |= {encoded, re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)}
    for core in _base64_cores(secret.encode()):
        forms |= {core, quote(core, safe="")}
    return forms


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char) or f"\\x{ord(char):02x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: newlines and other control characters escaped (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape, text)


def _trie(words: Iterable[str]) -> str:
    """One regular expression matching any of ``words``, longest first, as a trie.

    An alternation of thousands of literals is tried one by one at every position of the text;
    a trie is walked once (siblings differ in their first character, so nothing backtracks)."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


class _Patterns:
    """The compiled expressions of one set of secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = set().union(*(secret_forms(s) for s in secrets))
        literal = _trie(forms) if forms else ""
        known = f"{literal}|{_KEY_SHAPED}" if literal else _KEY_SHAPED
        self.configured = re.compile(literal) if literal else None
        self.known = re.compile(known)
        self.upstream = re.compile(known + _RANDOM_LOOKING)


class Redactor:
    """Replaces every form of the registered secrets, and key-shaped tokens, in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: frozenset[str] = frozenset()
        self._compiled: _Patterns | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        """Register more secrets (values shorter than :data:`MIN_SECRET` are ignored)."""
        new = {s for s in secrets if s and len(s) >= MIN_SECRET} - self.secrets
        if new:
            self.secrets = self.secrets | new
            self._compiled = None  # compiled again on first use, once for a batch of adds

    def _patterns(self) -> _Patterns:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _Patterns(self.secrets)
        return compiled

    def redact(self, text: str) -> str:
        """``text`` with every form of every secret, and every key-shaped token, replaced."""
        return self._patterns().known.sub(REDACTED, text)

    def redact_configured(self, text: str) -> str:
        """``text`` with every form of every registered secret replaced (for relaygate's own
        messages, which may name a key's format, as in ``Authorization: Bearer KEY``)."""
        pattern = self._patterns().configured
        return pattern.sub(REDACTED, text) if pattern is not None else text

    def excerpt(self, text: str, limit: int = EXCERPT) -> str:
        """A short, one-line, redacted excerpt of upstream text, safe to show a client."""
        text = _INVISIBLE.sub("", text[:_SCAN])
        text = _BREAKS.sub(" ", text).strip()
        text = self._patterns().upstream.sub(REDACTED, text)
        if len(text) > limit:
            text = text[: limit - 1].rstrip() + "\u2026"
        return text


def url_secrets(url: str | None) -> list[str]:
    """The password of a database or Redis URL, as written and decoded."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret in ``settings``: upstream keys, store and Redis passwords, the operator
    token, the alert webhook's signing secret, the trace collector's headers."""
    secrets = [u.api_key for m in settings.models.values() for u in m.upstreams if u.api_key]
    secrets += url_secrets(settings.database_url) + url_secrets(settings.redis_url)
    if settings.operator_token:
        secrets.append(settings.operator_token)
    if settings.alert_webhook_secret:
        secrets.append(settings.alert_webhook_secret)
    secrets += settings.otel.headers.values()
    if settings.otel.endpoint is not None:
        secrets += url_secrets(settings.otel.endpoint)
    return secrets


REDACTOR = Redactor()
"""The process's redactor: the log filter and every client-visible error message use it."""
