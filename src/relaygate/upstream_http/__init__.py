"""relaygate's own HTTP/1.1 client for the providers' upstream requests.

Built like relaygate's server side (:mod:`relaygate.serving`): asyncio protocols on uvloop
and httptools' C parser, with only what a provider needs: a POST with fixed headers, keep-alive
pools, TLS, timeouts, gzip/deflate answers, and a body read as it arrives with flow control.
It replaces aiohttp's client on the request path, where aiohttp's general machinery (payload
registry, header preparation, request and response objects, stream reader, timers) cost about a
quarter of a request's CPU. aiohttp stays where it is not hot: image fetching
(:mod:`relaygate.media`) and alert webhooks.

* :mod:`~relaygate.upstream_http.pool` — :class:`UpstreamClient`, per-host pools, :class:`Target`
* :mod:`~relaygate.upstream_http.connection` — one connection (the protocol and its parser)
* :mod:`~relaygate.upstream_http.response` — one answer and its body
* :mod:`~relaygate.upstream_http.errors` — the transport errors
"""

from relaygate.upstream_http.errors import (
    CertificateError,
    ConnectError,
    ConnectionClosed,
    ConnectTimeout,
    HeadTooLarge,
    HttpClientError,
    ReadTimeout,
    RemoteProtocolError,
)
from relaygate.upstream_http.pool import Target, UpstreamClient
from relaygate.upstream_http.response import Headers, Response

__all__ = [
    "CertificateError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "HeadTooLarge",
    "Headers",
    "HttpClientError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "Target",
    "UpstreamClient",
]
