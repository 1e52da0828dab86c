"""SSRF defences, proven with canaries: loopback listeners that must see zero connections.

Every refused case also shows that nothing was even attempted: for an address in the URL, no
request started and no name was looked up; for a name, no lookup succeeded (so the connector
had no address to connect to) and no connection was made. A positive control shows that the
canaries do count connections when the operator allow-lists them. Nothing here talks to any
address but 127.0.0.1 and ::1, and no real resolver is asked about a name.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relaygate.errors import InvalidRequest
from relaygate.media import AddressPolicy, ImagePipeline, PolicyResolver, system_lookup
from relaygate.media.fetch import RefusedAddress
from tests.media.conftest import MakePipeline
from tests.media.samples import one_image, png
from tests.media.servers import Canary, FakeDNS, ImageServer, RawServer, Trace, read_head

PART = "messages[0].content[1]"


async def refused(pipeline: ImagePipeline, url: str) -> InvalidRequest:
    """The 400 that preparing a request with image ``url`` raises."""
    request, raw = one_image(url)
    with pytest.raises(InvalidRequest) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert caught.value.param == PART
    return caught.value


# --- addresses in the URL: refused before anything happens ----------------------------------

LITERALS = [
    ("http://127.0.0.1:{p}/a.png", "loopback"),
    ("http://[::1]:{p6}/a.png", "loopback"),
    ("http://[::ffff:127.0.0.1]:{p}/a.png", "loopback (embedded in IPv6)"),
    ("http://[0:0:0:0:0:ffff:7f00:1]:{p}/a.png", "loopback (embedded in IPv6)"),
    ("http://2130706433:{p}/a.png", "loopback"),
    ("http://0x7f000001:{p}/a.png", "loopback"),
    ("http://017700000001:{p}/a.png", "loopback"),
    ("http://127.1:{p}/a.png", "loopback"),
    ("http://127.0.0.1.:{p}/a.png", "loopback"),
    ("https://127.0.0.1:{p}/a.png", "loopback"),
    ("http://0.0.0.0:{p}/a.png", "unspecified"),
    ("http://0:{p}/a.png", "unspecified"),
    ("http://[::]:{p6}/a.png", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/iam/", "link-local"),
    ("http://[fe80::1]:{p6}/a.png", "link-local"),
    ("http://10.0.0.1:{p}/a.png", "private"),
    ("http://172.16.0.1/a.png", "private"),
    ("http://192.168.1.1/a.png", "private"),
    ("http://[fd00::1]/a.png", "private"),
    ("http://100.64.0.1:{p}/a.png", "shared (CGNAT)"),
    ("http://224.0.0.1:{p}/a.png", "multicast"),
    ("http://[64:ff9b::7f00:1]:{p}/a.png", "loopback (embedded in IPv6)"),
    ("http://[2002:7f00:1::1]:{p}/a.png", "loopback (embedded in IPv6)"),
    ("http://[::127.0.0.1]:{p}/a.png", "reserved"),
]


@pytest.mark.parametrize(("template", "reason"), LITERALS, ids=[t for t, _ in LITERALS])
async def test_addresses_in_urls_are_refused_before_any_attempt(
    make_pipeline: MakePipeline, canary: Canary, canary6: Canary, template: str, reason: str
) -> None:
    trace, dns = Trace(), FakeDNS()
    url = template.format(p=canary.port, p6=canary6.port)
    error = await refused(make_pipeline(trace=trace, lookup=dns), url)
    assert f"is a {reason} address" in error.message
    assert (canary.connections, canary6.connections) == (0, 0)
    assert trace.requests == []
    assert dns.calls == []


# --- names: every address of the answer checked, inside the connector ------------------------

NAMES = {
    "localhost": [["127.0.0.1", "::1"]],
    "metadata.test": [["169.254.169.254"]],
    "internal.test": [["10.0.0.1"]],
    "cgnat.test": [["100.64.0.1"]],
    "mapped.test": [["::ffff:127.0.0.1"]],
    "zero.test": [["0.0.0.0"]],
    "six.test": [["::1"]],
    "public-and-loopback.test": [["93.184.215.14", "127.0.0.1"]],
    "nat64.test": [["64:ff9b::7f00:1"]],
    "not-an-address.test": [["localhost"]],
}


@pytest.mark.parametrize("name", [*NAMES, "nxdomain.test"])
async def test_names_resolving_to_refused_addresses_are_never_connected(
    make_pipeline: MakePipeline, canary: Canary, canary6: Canary, name: str
) -> None:
    trace, dns = Trace(), FakeDNS(dict(NAMES))
    port = canary6.port if name == "six.test" else canary.port
    error = await refused(make_pipeline(trace=trace, lookup=dns), f"http://{name}:{port}/a.png")
    assert "does not resolve to a public address" in error.message
    assert (canary.connections, canary6.connections) == (0, 0)
    assert dns.calls == [name]
    assert trace.resolved == []
    assert trace.connections == 0


# --- the positive control: the canaries do see a connection when one is made -----------------


async def test_control_an_allow_listed_canary_is_reached(
    make_pipeline: MakePipeline, canary: Canary, canary6: Canary
) -> None:
    dns = FakeDNS({"canary.test": [["::1"]]})
    allow = [f"127.0.0.1:{canary.port}", f"[::1]:{canary6.port}"]
    pipeline = make_pipeline(lookup=dns, allow_internal=allow)
    error = await refused(pipeline, f"http://127.0.0.1:{canary.port}/a.png")
    assert "could not be downloaded" in error.message
    await refused(pipeline, f"http://canary.test:{canary6.port}/a.png")
    assert canary.connections >= 1  # aiohttp retries a GET the server hung up on
    assert canary6.connections >= 1


# --- redirects: every hop checked ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("http://127.0.0.1:{p}/a.png", "is a loopback address"),
        ("http://[::1]:{p6}/a.png", "is a loopback address"),
        ("http://2130706433:{p}/a.png", "is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{p}/a.png", "is a loopback (embedded in IPv6) address"),
        ("http://localhost:{p}/a.png", "does not resolve to a public address"),
        ("http://169.254.169.254/latest/meta-data/", "is a link-local address"),
        ("http://10.0.0.1:{p}/a.png", "is a private address"),
    ],
)
async def test_a_redirect_from_an_allowed_server_to_loopback_is_refused(
    make_pipeline: MakePipeline,
    images: ImageServer,
    canary: Canary,
    canary6: Canary,
    target: str,
    problem: str,
) -> None:
    trace, dns = Trace(), FakeDNS({"localhost": [["127.0.0.1"]]})
    url = images.redirect("/r", target.format(p=canary.port, p6=canary6.port))
    allow = [f"127.0.0.1:{images.port}"]  # exactly the image server, not the canary's port
    error = await refused(make_pipeline(trace=trace, lookup=dns, allow_internal=allow), url)
    assert problem in error.message
    assert (canary.connections, canary6.connections) == (0, 0)
    assert [seen.path for seen in images.seen] == ["/r"]
    assert trace.connections == 1


# --- DNS rebinding: one answer per connection, and it is the one checked ---------------------


@pytest.fixture
async def rebinding() -> AsyncIterator[tuple[ImageServer, Canary]]:
    """An image server on [::1]:P and a canary on 127.0.0.1:P (the same port): a name that
    rebinds from ::1 to 127.0.0.1 would reach the canary."""
    for _ in range(50):
        server = await ImageServer("::1").start()
        try:
            canary = await Canary("127.0.0.1").start(server.port)
        except OSError:
            await server.close()
            continue
        yield server, canary
        await canary.close()
        await server.close()
        return
    pytest.fail("no port free on both ::1 and 127.0.0.1")


async def test_a_rebinding_name_is_connected_to_the_address_that_was_checked(
    make_pipeline: MakePipeline, rebinding: tuple[ImageServer, Canary]
) -> None:
    server, canary = rebinding
    data = png(5, 5)
    server.serve("/a.png", data)
    dns = FakeDNS({"rebind.test": [["::1"], ["127.0.0.1"]]})
    pipeline = make_pipeline(lookup=dns, allow_internal=[f"[::1]:{server.port}"], cache_bytes=0)
    request, raw = one_image(f"http://rebind.test:{server.port}/a.png")
    prepared = await pipeline.prepare(request, raw, vision=True, inline=True)
    assert prepared.images[0].image.data == data
    assert dns.calls == ["rebind.test"]  # checked and connected with one and the same answer
    with pytest.raises(InvalidRequest) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert "does not resolve to a public address" in caught.value.message
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert canary.connections == 0
    assert len(server.seen) == 1


async def test_a_redirect_to_the_same_name_is_looked_up_and_checked_again(
    make_pipeline: MakePipeline, rebinding: tuple[ImageServer, Canary]
) -> None:
    server, canary = rebinding
    server.serve("/a.png", png())
    server.redirect("/r", f"http://rebind.test:{server.port}/a.png")
    dns = FakeDNS({"rebind.test": [["::1"], ["127.0.0.1"]]})
    error = await refused(
        make_pipeline(lookup=dns, allow_internal=[f"[::1]:{server.port}"]),
        f"http://rebind.test:{server.port}/r",
    )
    assert "does not resolve to a public address" in error.message
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert canary.connections == 0


# --- the allow-list is an explicit, narrow opt-in --------------------------------------------


async def test_allow_listed_names_are_allowed_and_no_others(
    make_pipeline: MakePipeline, images: ImageServer, canary: Canary
) -> None:
    images.serve("/a.png", png())
    dns = FakeDNS({"images.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    pipeline = make_pipeline(lookup=dns, allow_internal=[f"images.test:{images.port}"])
    request, raw = one_image(f"http://images.test:{images.port}/a.png")
    assert (await pipeline.prepare(request, raw, vision=True, inline=True)).images
    await refused(pipeline, f"http://other.test:{images.port}/a.png")
    await refused(pipeline, f"http://images.test:{canary.port}/a.png")
    assert canary.connections == 0
    assert len(images.seen) == 1


async def test_the_resolver_refuses_numeric_names_from_the_system_resolver() -> None:
    """Defence in depth: a numeric name that reached the connector is still an address."""
    resolver = PolicyResolver(AddressPolicy(), system_lookup)
    for host in ("2130706433", "0x7f.1", "127.1"):
        with pytest.raises(RefusedAddress) as caught:
            await resolver.resolve(host, 80)
        assert caught.value.reason == "loopback"


# --- https: the connection is pinned, the name still drives SNI and the certificate check -----


def self_signed(directory: Path, name: str) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_https_sends_the_name_as_sni_and_verifies_the_certificate(
    make_pipeline: MakePipeline, tmp_path: Path
) -> None:
    names: list[str | None] = []
    context = self_signed(tmp_path, "images.test")

    def sni(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = sni  # type: ignore[assignment]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    server = await RawServer(handler, ssl_context=context).start()
    try:
        dns = FakeDNS({"images.test": [["127.0.0.1"]]})
        error = await refused(
            make_pipeline(lookup=dns, allow_internal=[f"127.0.0.1:{server.port}"]),
            f"https://images.test:{server.port}/a.png",
        )
    finally:
        await server.close()
    assert "could not be downloaded (ClientConnectorCertificateError)" in error.message
    assert names == ["images.test"]
    assert dns.calls == ["images.test"]
