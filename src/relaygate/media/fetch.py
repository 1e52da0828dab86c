"""Downloading image URLs without becoming an SSRF proxy.

* Only ``http`` and ``https``; URLs carrying credentials (``user:pass@``) are refused.
* A host that is an address (in any form a resolver accepts) is checked before anything else.
* A host name is resolved by :class:`PolicyResolver`, the connector's only resolver: every
  address of the answer is checked and the connection is made to exactly those addresses, so a
  second, different DNS answer (rebinding) is never asked for. Host header, SNI and certificate
  checks keep using the name. Nothing is cached between lookups and no connection is reused.
* Redirects are followed by hand, a few at most, each hop checked like the first URL.
* No cookies (:class:`aiohttp.DummyCookieJar`), no proxy or ``.netrc`` from the environment, no
  credentials of any kind, no content decoding (``Accept-Encoding: identity``).
* Time limits on connecting and on the whole fetch, name lookup and redirects included, so a
  server trickling one byte a second cannot hold a worker; the size is counted as the body
  streams in, whatever ``Content-Length`` says.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from relaygate.errors import InvalidRequest, RequestTooLarge
from relaygate.media.addresses import AddressPolicy, IPAddress, literal_address
from relaygate.media.dataurl import size_text, too_large
from relaygate.settings import ImageSettings

log = logging.getLogger("relaygate.media")

Lookup = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves a host name (and port) to IP address strings; injectable for tests."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_HEADERS = {
    "User-Agent": "relaygate-image-fetch",
    "Accept": "image/jpeg, image/png, image/webp",
    "Accept-Encoding": "identity",
}
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


async def system_lookup(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), addresses only."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class RefusedAddress(Exception):
    """A host resolved to an address the policy refuses (raised before any connection)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class PolicyResolver(AbstractResolver):
    """Resolves once per connection and refuses the whole answer if any address is refused."""

    def __init__(self, policy: AddressPolicy, lookup: Lookup = system_lookup) -> None:
        self._policy = policy
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = await self._lookup(host, port)
        results: list[ResolveResult] = []
        for text in dict.fromkeys(answer):
            address = _address(host, text)
            reason = self._policy.refusal(host, port, address)
            if reason is not None:
                raise RefusedAddress(host, reason)
            results.append(_result(host, port, address))
        if not results:
            raise OSError(f"{host} resolved to no address")
        return results

    async def close(self) -> None:
        return None


def _address(host: str, text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise RefusedAddress(host, "not an IP address (from the resolver)") from None


def _result(host: str, port: int, address: IPAddress) -> ResolveResult:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    return ResolveResult(
        hostname=host, host=str(address), port=port, family=family, proto=0, flags=_NUMERIC
    )


def _refused(where: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"The image URL at {where} {what}; relaygate only fetches images from public"
        " http(s) addresses",
        param=where,
    )


def check_url(text: str | URL, where: str, policy: AddressPolicy) -> URL:
    """Parse an image URL and check all that can be checked without the network."""
    try:
        url = text if isinstance(text, URL) else URL(text)
        host, port = url.host, url.port
    except (ValueError, UnicodeError):
        raise InvalidRequest(f"The image URL at {where} is not a valid URL", param=where) from None
    if url.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"The image URL at {where} must be an http(s) URL or a data: URL", param=where
        )
    if not host or port is None:
        raise InvalidRequest(f"The image URL at {where} has no host", param=where)
    if url.raw_user is not None or url.raw_password is not None:
        raise _refused(where, "carries credentials (user:password@)")
    address = literal_address(host)
    if address is not None:
        reason = policy.refusal(host, port, address)
        if reason is not None:
            log.info("image fetch refused: %s port %d is %s", host, port, reason)
            raise _refused(where, f"is a {reason} address")
    return url


class Fetcher:
    """Downloads image URLs with the checks above; one aiohttp session, opened on first use."""

    def __init__(
        self,
        settings: ImageSettings,
        policy: AddressPolicy,
        *,
        lookup: Lookup | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.settings = settings
        self.policy = policy
        self._lookup = lookup or system_lookup
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=PolicyResolver(self.policy, self._lookup),
                use_dns_cache=False,
                force_close=True,
                limit=self.settings.fetch_connections,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
                headers=_HEADERS,
                trace_configs=self._trace_configs,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.settings.connect_timeout,
                    sock_connect=self.settings.connect_timeout,
                ),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        url: URL,
        where: str,
        budget: Budget | None = None,
        slot: AbstractAsyncContextManager[None] | None = None,
    ) -> bytes:
        """The body of ``url`` (checked with :func:`check_url`), redirects followed. ``slot``
        (the key's share of the fetches) is held around the fetch; waiting for it counts
        against the fetch's time limit."""
        limit = self.settings.fetch_timeout
        try:
            async with asyncio.timeout(limit):
                if slot is None:
                    return await self._follow(url, where, budget)
                async with slot:
                    return await self._follow(url, where, budget)
        except TimeoutError:
            raise InvalidRequest(
                f"The image URL at {where} could not be downloaded within {limit:g} seconds",
                param=where,
            ) from None

    async def _follow(self, url: URL, where: str, budget: Budget | None) -> bytes:
        for _ in range(self.settings.max_redirects + 1):
            try:
                async with self._open().get(url, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        url = self._next_hop(url, response, where)
                        continue
                    if response.status != 200:
                        raise InvalidRequest(
                            f"The image URL at {where} answered HTTP {response.status}",
                            param=where,
                        )
                    return await self._read(response, where, budget)
            except RefusedAddress as exc:
                log.info("image fetch refused: %s resolves to a %s address", exc.host, exc.reason)
                raise _refused(where, "does not resolve to a public address") from None
            except aiohttp.ClientConnectorDNSError:
                raise _refused(where, "does not resolve to a public address") from None
            except aiohttp.ServerTimeoutError:
                raise InvalidRequest(
                    f"The image URL at {where} did not connect or answer in time", param=where
                ) from None
            except (aiohttp.ClientError, OSError, ValueError, UnicodeError) as exc:
                raise InvalidRequest(
                    f"The image URL at {where} could not be downloaded ({type(exc).__name__})",
                    param=where,
                ) from None
        raise InvalidRequest(
            f"The image URL at {where} redirected more than {self.settings.max_redirects} times",
            param=where,
        )

    def _next_hop(self, url: URL, response: aiohttp.ClientResponse, where: str) -> URL:
        location = response.headers.get("Location")
        if not location:
            raise InvalidRequest(
                f"The image URL at {where} redirected without a Location", param=where
            )
        try:
            target = url.join(URL(location))
        except (ValueError, UnicodeError):
            raise InvalidRequest(
                f"The image URL at {where} redirected to an invalid URL", param=where
            ) from None
        return check_url(target, where, self.policy)

    async def _read(
        self, response: aiohttp.ClientResponse, where: str, budget: Budget | None
    ) -> bytes:
        limit = self.settings.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise too_large(where, limit)
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise too_large(where, limit)
            if budget is not None:
                budget.take(len(chunk))
        return bytes(body)


class Budget:
    """The image bytes one request may still bring in (all its images together)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise RequestTooLarge(
                f"Images too large: this request's images add up to more than"
                f" {size_text(self.limit)}",
                param="content",
                fallback_suggestion="compress images or send fewer of them",
            )


__all__ = [
    "Budget",
    "Fetcher",
    "Lookup",
    "PolicyResolver",
    "RefusedAddress",
    "check_url",
    "system_lookup",
]
