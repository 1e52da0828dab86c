"""The redactor: every form of a configured secret, key-shaped tokens, excerpts, log escaping."""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from urllib.parse import quote, quote_plus

import pytest

from relaygate.logs import RedactingFilter
from relaygate.redaction import REDACTED, Redactor, configured_secrets
from relaygate.settings import settings_from_mapping

SECRET = 'Op+Key/With=Special&Chars"Quote\\Back~2026'


def encodings(secret: str) -> dict[str, str]:
    data = secret.encode()
    return {
        "raw": secret,
        "json": json.dumps(secret),
        "json-slash": json.dumps(secret).replace("/", "\\/"),
        "json-go": json.dumps(secret).replace("&", "\\u0026"),
        "url": quote(secret, safe=""),
        "url-lower": re.sub("%..", lambda m: m.group().lower(), quote(secret, safe="")),
        "url-plus": quote_plus(secret, safe=""),
        "hex": data.hex(),
        **{
            f"base64+{n}": base64.b64encode(b"pad"[:n] + data + b"tail").decode()
            for n in range(3)
        },
        **{
            f"base64url+{n}": base64.urlsafe_b64encode(b"\xfb\xff"[:n] + data).decode()
            for n in range(3)
        },
        "basic-auth": base64.b64encode(b"user:" + data).decode(),
        "url-encoded-base64": quote(base64.b64encode(b"u:" + data).decode(), safe=""),
    }


@pytest.mark.parametrize("form", list(encodings(SECRET)))
def test_every_form_of_a_configured_secret_is_redacted(form: str) -> None:
    redactor = Redactor([SECRET])
    text = f"upstream said: bad credential <{encodings(SECRET)[form]}> (code 401)"
    redacted = redactor.redact(text)
    assert REDACTED in redacted
    assert redacted.startswith("upstream said: bad credential <")
    assert redacted.endswith("> (code 401)")
    data = SECRET.encode()
    # what is left of a base64 form are the few characters shared with the text around it
    assert len(redacted) < len(text) - len(data) // 2


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        pytest.param("key sk-ant-api03-AbC_123-xyzXYZ failed", "sk-ant-api03-AbC_123-xyzXYZ",
                     id="anthropic"),
        pytest.param("key AIzaSyDx9Kq2LmN4pR7sT1vW3yZ5bC8dE0fG6hJ is invalid",
                     "AIzaSyDx9Kq2LmN4pR7sT1vW3yZ5bC8dE0fG6hJ", id="gemini"),
        pytest.param("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA",
                     id="basic"),
        pytest.param("GET /v1?key=abcdef123456 HTTP/1.1", "abcdef123456", id="key-param"),
        pytest.param("connect postgresql://relay:s3cr3t@db:5432/x failed", "s3cr3t",
                     id="url-password"),
    ],
)
def test_key_shaped_tokens_are_redacted_unconfigured(text: str, leaked: str) -> None:
    assert leaked not in Redactor().redact(text)


def test_an_excerpt_is_one_short_line_without_tokens() -> None:
    redactor = Redactor([SECRET])
    azure_key = "3f9a1c7e5b2d4086a1e9c3b7d5f20e8a"  # not configured: still key-shaped
    split = SECRET[:10] + "\u200b" + SECRET[10:]  # an invisible character inside the key
    text = f"Bad key {azure_key}\n2031-01-01 ERROR forged\r\x1b[31m {split} " + "x" * 500
    excerpt = redactor.excerpt(text)
    assert azure_key not in excerpt
    assert SECRET not in excerpt
    assert SECRET[:10] not in excerpt
    assert not any(ord(c) < 32 for c in excerpt)
    assert len(excerpt) <= 200
    assert excerpt.startswith("Bad key [redacted] 2031-01-01 ERROR forged")
    # ordinary words and short identifiers survive
    plain = "model gpt-5.2 does not support max_completion_tokens (request req_123)"
    assert redactor.excerpt(plain) == plain


def test_configured_secrets_cover_every_secret_setting() -> None:
    settings = settings_from_mapping(
        {
            "database_url": "postgresql://relay:db%2Fpass%40word@127.0.0.1/relay",
            "redis_url": "redis://:redis-password-0123@127.0.0.1:6379/0",
            "operator_token": "operator-token-0123456789",
            "models": {"m": {"pricing": {"input": 1, "output": 1}, "upstreams": [
                {"provider": "openai", "api_key": "upstream-key-0123456789"}]}},
        },
        "test",
        {},
    )
    secrets = set(configured_secrets(settings))
    assert {"db/pass@word", "redis-password-0123", "operator-token-0123456789",
            "upstream-key-0123456789"} <= secrets


# --- the log filter ------------------------------------------------------------------------


def formatted(record: logging.LogRecord, redactor: Redactor) -> str:
    assert RedactingFilter(redactor=redactor).filter(record)
    return logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)


def test_a_log_line_cannot_be_forged_with_a_newline() -> None:
    record = logging.LogRecord(
        "relaygate", logging.WARNING, __file__, 1, "upstream %s failed: %s",
        ("u", "boom\n2031-01-01 ERROR relaygate: forged\r\x1b[2Jend"), None,
    )
    line = formatted(record, Redactor())
    assert line.splitlines() == [line]
    assert "boom\\n2031-01-01 ERROR relaygate: forged\\r\\x1b[2Jend" in line


def test_a_traceback_keeps_its_lines_indented_and_redacted() -> None:
    try:
        raise RuntimeError(f"bad key {SECRET}\nERROR relaygate: forged")
    except RuntimeError:
        record = logging.LogRecord("relaygate", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    text = formatted(record, Redactor([SECRET]))
    first, *rest = text.splitlines()
    assert first == "ERROR relaygate: failed"
    assert rest
    assert all(line.startswith("  ") for line in rest)
    assert "RuntimeError: bad key [redacted]" in text
    assert SECRET not in text
