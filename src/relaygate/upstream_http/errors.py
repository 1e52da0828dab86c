"""What can go wrong on the way to an upstream and back, before any provider reads a byte.

::

    HttpClientError
     ├── ConnectError            not connected (refused, DNS, TLS, the client closed)
     │    ├── ConnectTimeout     ... within ``connect_timeout``
     │    └── CertificateError   ... because the server's certificate did not verify
     ├── ReadTimeout             no byte of the answer came within ``read_timeout``
     ├── ConnectionClosed        the server closed (or reset) the connection before the answer ended
     └── RemoteProtocolError     the answer is not HTTP/1.1 relaygate can read
          └── HeadTooLarge       ... its status line and headers pass 64 KiB

These are transport errors, like the aiohttp exceptions they replace: the providers map them
to :class:`relaygate.errors.UpstreamUnreachable` (and their class name, never their text, goes
into the client's message), where the upstream is called.
"""

from __future__ import annotations


class HttpClientError(Exception):
    """Base of the upstream client's errors."""


class ConnectError(HttpClientError):
    """The connection could not be opened."""


class ConnectTimeout(ConnectError):
    """The connection (with its TLS handshake) took longer than ``connect_timeout``."""


class CertificateError(ConnectError):
    """The server's TLS certificate did not verify (untrusted, expired, another host's)."""


class ReadTimeout(HttpClientError):
    """No byte of the answer came within ``read_timeout``."""


class ConnectionClosed(HttpClientError):
    """The connection ended before the answer did."""

    def __init__(self, message: str, before_answer: bool = False) -> None:
        super().__init__(message)
        self.before_answer = before_answer
        """Whether not a byte of the answer had come (a reused connection may be retried)."""


class RemoteProtocolError(HttpClientError):
    """The upstream's bytes are not an HTTP/1.1 answer (or a body that cannot be decoded)."""


class HeadTooLarge(RemoteProtocolError):
    """The answer's status line and headers pass the limit."""


__all__ = [
    "CertificateError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "HeadTooLarge",
    "HttpClientError",
    "ReadTimeout",
    "RemoteProtocolError",
]
