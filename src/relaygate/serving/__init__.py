"""relaygate's HTTP/1.1 connection protocol, run by uvicorn's server.

uvicorn keeps what a server process needs: sockets, ``--workers``, signals, lifespan, graceful
shutdown and the ``date`` header. This protocol replaces its per-request machinery: a scope with
a copied state, an ``asyncio.Event`` and a keep-alive timer per request, two regular
expressions per response header, and one socket write for the head and another for the body.
Under callgrind, a trivial app ran 209,000 instructions a request behind uvicorn's httptools
protocol and 163,000 behind this one; relaygate's streamed request, 46,000 fewer.

Here, for each request:

- the request is parsed by httptools, as in uvicorn, and the app is called through ASGI with
  an HTTP scope; a body that arrived whole is handed over without waiting; a ``#fragment`` is
  not part of the path;
- a response's head leaves with its first body bytes, in one write (a stream's head with its
  first chunk); a chunked body's framing is written with each piece;
- response headers are checked in two table lookups in all: names are tokens, and no value
  holds CR, LF or another control character (no response splitting);
- pipelined requests are answered in order (reading pauses while one is in flight);
- ``Expect: 100-continue`` is answered when the app first asks for the body;
- back-pressure: a send waits while the transport's buffer is over its high-water mark, and
  reading pauses while more than 64 KiB of body is unread;
- a client that goes away: ``receive()`` answers ``http.disconnect`` and ``send()`` drops what
  it is given.

What a web server promises against clients that misbehave (:class:`Limits`):

- a request that cannot be parsed (bad framing of a chunked body, a ``Transfer-Encoding`` other
  than chunked, ``Content-Length`` in a trailer...) is answered 400 and the connection closed,
  also when it breaks while the app is reading its body: the app's ``receive()`` then answers
  ``http.disconnect``;
- a request line and headers over ``max_head_bytes`` get 431, counted as they arrive (httptools
  would otherwise buffer a header value of any size);
- deadlines, all kept by the one timer of the connection (re-armed only when it fires, or when
  a deadline comes sooner than it): ``timeout_keep_alive`` between requests, ``head_timeout``
  for a head that has begun (408), ``body_timeout`` without progress while a body is awaited
  from the client (408, the app hears a disconnect), ``send_timeout`` for a send waiting on a
  full transport (the client is taken as gone: the transport is aborted, ``receive()`` answers
  ``http.disconnect`` and ``send()`` drops);
- past ``max_connections`` open connections, a new one is answered 503 (``Retry-After: 1``)
  and closed at once, so the process never runs out of file descriptors;
- a response sent before the whole request body was read (a 413, say) closes the connection
  after reading and discarding at most 1 MiB more of the body, for at most 2 s, so that the
  client can read the answer instead of a reset;
- when the connection ends, the protocol breaks its reference cycles (parser, cycles, timer,
  futures), so it is freed by reference counting: the app freezes the garbage collector.

Not supported, because relaygate does not use them: WebSocket upgrades (an upgrade request is
answered as plain HTTP), uvicorn's access log, ``root_path`` and ``limit_concurrency``
(``max_connections`` takes its place).
"""

from __future__ import annotations

from relaygate.serving.cycle import Cycle
from relaygate.serving.protocol import HttpProtocol, Limits

__all__ = ["Cycle", "HttpProtocol", "Limits"]
