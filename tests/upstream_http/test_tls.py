"""https: the server's certificate and host name are verified (the system's trust by
default; here a trustme CA added to a default context)."""

from __future__ import annotations

import ssl

import pytest
import trustme

from relaygate.upstream_http import CertificateError, UpstreamClient
from tests.upstream_http.servers import Upstream, keep_answering


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_a_trusted_certificate_for_the_host_is_accepted(ca: trustme.CA) -> None:
    async with (
        Upstream(keep_answering, tls=_server(ca, "127.0.0.1")) as upstream,
        UpstreamClient(ssl_context=_trusting(ca)) as client,
    ):
        for _ in range(2):
            response = await client.post(upstream.url(scheme="https"), b"{}", {})
            assert await response.receive() == b"ok"
            response.release()
    assert upstream.connections == 1


@pytest.mark.parametrize(
    ("names", "trusted"),
    [
        pytest.param(("example.org",), True, id="another-host"),
        pytest.param(("127.0.0.1",), False, id="untrusted"),
    ],
)
async def test_a_certificate_that_does_not_verify_is_refused(
    ca: trustme.CA, names: tuple[str, ...], trusted: bool
) -> None:
    tls = _trusting(ca) if trusted else None  # None: the system's trust store
    async with (
        Upstream(keep_answering, tls=_server(ca, *names)) as upstream,
        UpstreamClient(ssl_context=tls) as client,
    ):
        with pytest.raises(CertificateError):
            await client.post(upstream.url(scheme="https"), b"{}", {})
