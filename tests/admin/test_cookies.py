"""The session cookie's attributes, reading it back, and the client's address and scheme per
the trusted proxy headers (never trusted unless configured, and only from trusted proxies)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from relaygate.admin.cookies import (
    MAX_COOKIE_HEADER_BYTES,
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    clear_session_cookie,
    client_address,
    is_secure,
    read_cookie,
    request_scheme,
    session_cookie,
    session_cookie_value,
)
from relaygate.errors import ConfigError
from relaygate.settings import Settings, settings_from_mapping

COOKIE = "ses_" + "ab" * 12 + "." + "S" * 43
PLAIN = Settings()
XFF = Settings(trusted_proxy_headers=["X-Forwarded-For", "X-Forwarded-Proto"])
FORWARDED = Settings(trusted_proxy_headers=["forwarded"])


def scope(
    *headers: tuple[str, str], scheme: str = "http", client: str | None = "127.0.0.1"
) -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": scheme,
        "client": (client, 50000) if client is not None else None,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
    }


def attributes(header: tuple[bytes, bytes]) -> tuple[str, set[str]]:
    name, value = header
    assert name == b"set-cookie"
    first, *rest = value.decode().split("; ")
    return first, set(rest)


# --- Set-Cookie ------------------------------------------------------------------------------


def test_over_plain_http_the_cookie_is_not_secure() -> None:
    first, rest = attributes(session_cookie(scope(), PLAIN, COOKIE))
    assert first == f"{SESSION_COOKIE}={COOKIE}"
    assert rest == {"Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={12 * 3600}"}


def test_over_https_the_cookie_is_secure_with_the_host_prefix() -> None:
    first, rest = attributes(session_cookie(scope(scheme="https"), PLAIN, COOKIE))
    assert first == f"{SECURE_SESSION_COOKIE}={COOKIE}"
    assert rest == {"Path=/", "HttpOnly", "SameSite=Lax", "Secure", f"Max-Age={12 * 3600}"}
    assert not any(a.startswith("Domain") for a in rest)  # __Host- forbids it


@pytest.mark.parametrize(
    ("settings", "client", "secure"),
    [
        pytest.param(XFF, "127.0.0.1", True, id="trusted-header-from-trusted-proxy"),
        pytest.param(PLAIN, "127.0.0.1", False, id="header-not-trusted"),
        pytest.param(XFF, "203.0.113.5", False, id="client-is-not-a-proxy"),
        pytest.param(
            Settings(trusted_proxy_headers=["x-forwarded-for"]),
            "127.0.0.1",
            False,
            id="only-the-address-header-trusted",
        ),
    ],
)
def test_x_forwarded_proto_counts_only_when_trusted(
    settings: Settings, client: str, secure: bool
) -> None:
    request = scope(("X-Forwarded-Proto", "https"), client=client)
    assert is_secure(request, settings) is secure
    assert ("Secure" in attributes(session_cookie(request, settings, COOKIE))[1]) is secure


def test_the_nearest_proxy_sets_the_scheme() -> None:
    assert request_scheme(scope(("X-Forwarded-Proto", "https, http")), XFF) == "http"
    assert request_scheme(scope(("X-Forwarded-Proto", "http, https")), XFF) == "https"
    assert request_scheme(scope(("X-Forwarded-Proto", "gopher")), XFF) == "http"
    assert request_scheme(scope(("X-Forwarded-Proto", "http"), scheme="https"), XFF) == "http"


def test_clearing_the_cookie_expires_it_with_the_same_attributes() -> None:
    first, rest = attributes(clear_session_cookie(scope(scheme="https"), PLAIN))
    assert first == f"{SECURE_SESSION_COOKIE}="
    assert rest == {"Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=0"}


@pytest.mark.parametrize("value", ["x", COOKIE + "; Domain=evil.test", COOKIE + "\r\nX: y", ""])
def test_only_a_session_cookie_value_can_be_set(value: str) -> None:
    with pytest.raises(ValueError, match="not a session cookie"):
        session_cookie(scope(), PLAIN, value)


# --- reading the cookie ----------------------------------------------------------------------


def test_the_cookie_is_read_among_others_and_across_headers() -> None:
    request = scope(("Cookie", "theme=dark; lang=de"), ("Cookie", f"{SESSION_COOKIE}={COOKIE}"))
    assert read_cookie(request, SESSION_COOKIE) == COOKIE
    assert read_cookie(request, "lang") == "de"
    assert read_cookie(request, "missing") is None
    assert read_cookie(scope(), SESSION_COOKIE) is None


def test_over_https_only_the_host_prefixed_cookie_counts() -> None:
    both = (("Cookie", f"{SESSION_COOKIE}=planted; {SECURE_SESSION_COOKIE}={COOKIE}"),)
    assert session_cookie_value(scope(*both, scheme="https"), PLAIN) == COOKIE
    assert session_cookie_value(scope(*both), PLAIN) == "planted"
    plain_only = ("Cookie", f"{SESSION_COOKIE}={COOKIE}")
    assert session_cookie_value(scope(plain_only, scheme="https"), PLAIN) is None


def test_reading_cookies_is_bounded() -> None:
    padding = "a=" + "x" * MAX_COOKIE_HEADER_BYTES
    late = scope(("Cookie", f"{padding}; {SESSION_COOKIE}={COOKIE}"))
    assert read_cookie(late, SESSION_COOKIE) is None
    many = "; ".join(f"c{i}=v" for i in range(1000))
    assert (
        read_cookie(scope(("Cookie", f"{many}; {SESSION_COOKIE}={COOKIE}")), SESSION_COOKIE) is None
    )


# --- the client's address --------------------------------------------------------------------


def test_a_spoofed_x_forwarded_for_is_ignored_unless_trusted() -> None:
    spoofed = scope(("X-Forwarded-For", "10.9.9.9"), client="203.0.113.5")
    assert client_address(spoofed, PLAIN) == "203.0.113.5"
    # configured, but the connection is not from a trusted proxy: still ignored
    assert client_address(spoofed, XFF) == "203.0.113.5"
    # from the trusted local proxy, but the header is not configured as trusted
    local = scope(("X-Forwarded-For", "10.9.9.9"))
    assert client_address(local, PLAIN) == "127.0.0.1"
    assert client_address(local, FORWARDED) == "127.0.0.1"


def test_the_right_most_untrusted_hop_is_the_client() -> None:
    settings = msgspec.structs.replace(XFF, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    # the client wrote "1.2.3.4" itself; the edge proxy (10.0.0.2) appended the real peer
    chain = scope(("X-Forwarded-For", "1.2.3.4, 198.51.100.7, 10.0.0.2"))
    assert client_address(chain, settings) == "198.51.100.7"
    split = scope(("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "198.51.100.7"))
    assert client_address(split, settings) == "198.51.100.7"
    # every hop a proxy: the left-most
    assert client_address(scope(("X-Forwarded-For", "10.1.1.1, 10.0.0.2")), settings) == (
        "10.1.1.1"
    )
    # garbage written by a hop: the last address known
    assert client_address(scope(("X-Forwarded-For", "junk, 10.0.0.2")), settings) == ("10.0.0.2")
    assert client_address(scope(("X-Forwarded-For", "")), settings) == "127.0.0.1"
    # ports and IPv6 forms are read
    assert client_address(scope(("X-Forwarded-For", "[2001:db8::7]:443")), settings) == (
        "2001:db8::7"
    )
    assert client_address(scope(("X-Forwarded-For", "198.51.100.7:9")), settings) == (
        "198.51.100.7"
    )


def test_forwarded_is_read_per_rfc_7239() -> None:
    header = (
        "Forwarded",
        'for=1.2.3.4;proto=http, for="[2001:db8:cafe::17]:4711";proto=https, for=127.0.0.1',
    )
    assert client_address(scope(header), FORWARDED) == "2001:db8:cafe::17"
    assert request_scheme(scope(header), FORWARDED) == "https"
    assert client_address(scope(header), PLAIN) == "127.0.0.1"
    assert request_scheme(scope(header), PLAIN) == "http"
    unknown = ("Forwarded", "for=unknown;proto=https")
    assert client_address(scope(unknown), FORWARDED) == "127.0.0.1"


def test_a_connection_without_a_peer() -> None:
    assert client_address(scope(("X-Forwarded-For", "1.2.3.4"), client=None), XFF) is None
    assert request_scheme(scope(client=None), XFF) == "http"


def test_an_overlong_chain_is_read_from_its_right_end() -> None:
    chain = ", ".join(["9.9.9.9"] * 5000 + ["198.51.100.7"])
    assert client_address(scope(("X-Forwarded-For", chain)), XFF) == "198.51.100.7"


# --- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(
            {"trusted_proxy_headers": ["x-real-ip"]},
            "trusted_proxy_headers[0]",
            id="unknown-header",
        ),
        pytest.param({"trusted_proxies": ["10.0.0.0/33"]}, "trusted_proxies[0]", id="bad-network"),
        pytest.param(
            {"password_hash_memory_kib": 1024}, "password_hash_memory_kib", id="too-little-memory"
        ),
        pytest.param({"password_min_length": 4}, "password_min_length", id="short-minimum"),
    ],
)
def test_bad_identity_settings_stop_start_up(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        settings_from_mapping(data, "relaygate.yaml", {})


def test_identity_settings_load_from_a_file() -> None:
    settings = settings_from_mapping(
        {
            "trusted_proxy_headers": ["Forwarded"],
            "trusted_proxies": ["10.0.0.0/8"],
            "session_idle_seconds": 60,
        },
        "relaygate.yaml",
        {},
    )
    assert settings.trusted_proxy_headers == ["Forwarded"]
    assert settings.session_idle_seconds == 60
    assert (
        client_address(scope(("Forwarded", "for=192.0.2.1"), client="10.1.2.3"), settings)
        == "192.0.2.1"
    )
