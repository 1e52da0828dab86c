"""Choosing an upstream: priority, weight, retries with back-off, and health.

Upstreams are tried by ``priority`` (lower first); among equal priorities a weighted random
order (``weight``) spreads the traffic. Upstreams out of rotation (:mod:`.health`) are skipped,
except for the one trial request that probes them after their cool-down.

A connect error, 429 or 5xx moves on to the next upstream at once. When every upstream of a
round has failed, those with ``retries`` left are tried again after an exponential back-off with
jitter, or after the ``Retry-After`` they sent when it is at most :data:`MAX_RETRY_WAIT` (a
longer one drops that upstream for this request). A 401 or 403 means our own credentials are
wrong: it is logged at error level (without the key) and that upstream is not retried. A 400,
404, 413 or 422 means the request itself is wrong: the client gets a 400 at once.

A non-streamed answer is read whole within its attempt, so an answer the upstream breaks off
after accepting the request (a cut body, an unreadable one) is one more failed attempt: the next
upstream is tried, and the cut attempt is recorded as unbilled (the upstream may bill relaygate
for it; the key is not charged): a log line, ``relaygate_unbilled_attempts_total`` and
``relaygate_unbilled_tokens_total``. A stream belongs to the client from its first event, so a
cut there ends the stream (see :mod:`relaygate.api.stream`) instead of failing over.

Each request gives each upstream it tried one outcome for its health window, however many
attempts it made there, and only once the answer is over: a success when it completed (or the
client left a stream the upstream was still serving), a failure when it failed or was cut. A 429
is neither: it is not counted, and a trial request that gets one gives its slot back
(:meth:`relaygate.routing.health.UpstreamHealth.release`); the upstream is skipped for the
``Retry-After`` it gave, by every request (:meth:`~relaygate.routing.health.UpstreamHealth.hold`).
An upstream's ``Retry-After`` is read as at most its cool-down, the longest it is skipped for,
so that is also the longest wait a client is told. A request cancelled during an attempt (the
shutdown deadline) gives no outcome either, and raises :class:`AnswerCancelled` with what it had
received.

When nothing answers (see :func:`_nothing_answered`): 429 ``rate_limit_error`` if every upstream
refused for rate (HTTP 429), 503 ``service_unavailable_error`` if some refused for rate or were
skipped as out of rotation, both with a ``Retry-After`` for the soonest of them; else the last
upstream's error (502 ``upstream_error``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from relaygate import tracing
from relaygate.accounting.estimate import prompt_token_guess
from relaygate.errors import (
    ApiError,
    InvalidRequest,
    NoUpstream,
    ServiceUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamsRateLimited,
    UpstreamStatus,
    UpstreamsUnavailable,
    UpstreamUnreachable,
    bounded_wait,
)
from relaygate.metrics import RoutingMetrics
from relaygate.protocol.assemble import Collected
from relaygate.providers.base import Batch, Provider, ProviderRequest, Started
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.health import UpstreamHealth

log = logging.getLogger("relaygate.routing")

MAX_BACKOFF = 2.0
"""Longest back-off between two rounds of attempts, in seconds."""
MAX_RETRY_WAIT = 2.0
"""Longest ``Retry-After`` honoured by waiting; an upstream asking for more is not retried."""
DEFAULT_RATE_WAIT = 1.0
"""The wait a client is told for an upstream that answered 429 without ``Retry-After``."""
_FIRST_BACKOFF = 0.1
_random = random.Random()
# Upstream answers that mean the request itself is wrong: the client gets a 400, not a 502.
_CLIENT_FAULT = {400, 404, 413, 422}


@dataclass(slots=True)
class Opened:
    """An upstream that accepted the request, and the rest of its answer."""

    provider: Provider
    upstream_model: str
    events: AsyncIterator[Batch]


Sleep = Callable[[float], Awaitable[None]]


class AnswerCancelled(asyncio.CancelledError):
    """The request was cancelled (the shutdown deadline) during an attempt: the model and
    upstream it was on and what a non-streamed answer had delivered so far, so that the
    request is settled on them (the prompt estimate plus the tokens received) rather than
    with nothing. It is a :class:`asyncio.CancelledError`, and handled as one."""

    def __init__(self, model: CatalogModel, upstream: str, received: Collected) -> None:
        super().__init__()
        self.model = model
        self.upstream = upstream
        self.received = received


def _backoff(round_: int, rng: random.Random) -> float:
    """Exponential back-off with jitter: 0.05-0.1 s, then 0.1-0.2 s, ... up to MAX_BACKOFF."""
    return float(min(MAX_BACKOFF, _FIRST_BACKOFF * 2**round_) * rng.uniform(0.5, 1.0))


def route_order(model: CatalogModel, rng: random.Random) -> list[int]:
    """Indices of ``model.upstreams`` in the order to try them: by priority, then a weighted
    random order among equal priorities (Efraimidis-Spirakis: sort by ``u ** (1 / w)``)."""
    if len(model.upstreams) == 1:
        return [0]
    keyed = [
        (p.settings.priority, -(rng.random() ** (1.0 / p.settings.weight)), i)
        for i, p in enumerate(model.upstreams)
    ]
    return [i for _, _, i in sorted(keyed)]


@dataclass(slots=True)
class _Candidate:
    """One upstream within one request: its attempts so far and its last error."""

    provider: Provider
    health: UpstreamHealth
    tries: int = 0
    error: UpstreamError | None = None
    failed_at: float = 0.0
    recorded: bool = False

    def fail(self, error: UpstreamError) -> None:
        self.error = error
        self.failed_at = time.monotonic()

    def record(self, ok: bool) -> None:
        """This request's one outcome on this upstream (later calls change nothing)."""
        if not self.recorded:
            self.recorded = True
            self.health.record(ok, "" if ok or self.error is None else _summary(self.error))

    def release(self) -> None:
        """This request says nothing about the upstream's health (a 429, a cancellation):
        nothing is counted, and a trial it held is given back (later calls change nothing)."""
        if not self.recorded:
            self.recorded = True
            self.health.release()

    def asked(self) -> float | None:
        """The wait the last error asked for (``Retry-After``), at most the upstream's
        cool-down: it is tried again after that whatever it said, so that is the truth a client
        is told. ``None`` when it did not say."""
        error = self.error
        if error is None or error.retry_after is None:
            return None
        return min(bounded_wait(error.retry_after), self.health.policy.cooldown_seconds)

    def may_retry(self) -> bool:
        error = self.error
        if error is None or not error.retryable:
            return False
        asked = self.asked()
        if asked is not None and asked > MAX_RETRY_WAIT:
            return False
        return self.tries <= self.provider.settings.retries

    def conclude(self) -> None:
        """This request's outcome on an upstream it did not get an answer from. A 429 is
        neither success nor failure: the upstream is up, and is skipped for the time it asked
        for, if it did."""
        if self.error is None:
            return
        if not self.rate_limited():
            self.record(False)
        elif not self.recorded:
            self.release()
            asked = self.asked()
            if asked is not None:
                self.health.hold(max(0.0, asked - (time.monotonic() - self.failed_at)))

    def rate_limited(self) -> bool:
        return isinstance(self.error, UpstreamStatus) and self.error.upstream_status == 429

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until this upstream may take the request: for a 429, what it
        asked for (:data:`DEFAULT_RATE_WAIT` if it did not say); for one skipped, the rest of
        its pause or its cool-down."""
        if not self.tries:
            return max(self.health.rate_limited_for(), self.health.retry_in())
        asked = self.asked()
        return max(0.0, (DEFAULT_RATE_WAIT if asked is None else asked) - (now - self.failed_at))


def _summary(error: UpstreamError) -> str:
    """A failure as ``GET /health`` (unauthenticated) may show it: no upstream message."""
    if isinstance(error, UpstreamStatus):
        return f"HTTP {error.upstream_status}"
    return {
        UpstreamUnreachable: "unreachable or timed out",
        UpstreamProtocolError: "unreadable answer",
    }.get(type(error), "failed")


def no_upstream(model: CatalogModel) -> ServiceUnavailable:
    return NoUpstream(
        f"Model {model.name!r} has no upstream configured: set OPENAI_API_KEY, or add an"
        f" upstream under models.{model.name}.upstreams in the config file",
        fallback_suggestion="configure an upstream for this model, or use another model",
    )


@dataclass(slots=True)
class _Route:
    """One request on one model: what an attempt needs besides its upstream."""

    model: CatalogModel
    request: ProviderRequest
    metrics: RoutingMetrics | None


async def open_upstream(
    model: CatalogModel,
    request: ProviderRequest,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    metrics: RoutingMetrics | None = None,
) -> Opened:
    """Start the request on the first upstream that accepts it (see the module docstring)."""
    if not model.upstreams:
        raise no_upstream(model)
    rng = rng or _random
    route = _Route(model, request, metrics)
    upstreams = model.upstreams
    if len(upstreams) == 1:  # most models: no order to draw, no retries to compare
        queue = [_Candidate(upstreams[0], model.health[0])]
        rounds = 1 + upstreams[0].settings.retries
    else:
        queue = [_Candidate(upstreams[i], model.health[i]) for i in route_order(model, rng)]
        rounds = 1 + max([p.settings.retries for p in upstreams])
    tried: list[_Candidate] = []
    skipped: list[_Candidate] = []
    try:
        for round_ in range(rounds):
            retry: list[_Candidate] = []
            for candidate in queue:
                if candidate.tries == 0:
                    if not candidate.health.acquire():
                        skipped.append(candidate)
                        continue
                    tried.append(candidate)
                if tracing.enabled:
                    tracing.attempt(candidate.provider, model.name, request, candidate.tries)
                opened = await _attempt(candidate, route)
                if tracing.enabled:
                    tracing.attempted(opened, candidate.error)
                if opened is not None:
                    return opened
                if candidate.may_retry():
                    retry.append(candidate)
            if not retry:
                break
            await sleep(_round_wait(round_, retry, rng))
            queue = retry
    except asyncio.CancelledError:
        for candidate in tried:
            if candidate.error is None:
                candidate.release()  # cut short: neither a success nor a failure
        raise
    finally:
        for candidate in tried:
            if candidate.error is not None:
                candidate.conclude()
    raise _nothing_answered(model, tried, skipped)


def _round_wait(round_: int, retry: list[_Candidate], rng: random.Random) -> float:
    asked = [wait for c in retry if (wait := c.asked()) is not None]
    return max([_backoff(round_, rng), *asked])


async def _attempt(candidate: _Candidate, route: _Route) -> Opened | None:
    """One attempt on one upstream: the opened answer, or ``None`` with ``candidate.error``;
    :class:`AnswerCancelled` (with what was received) when the request is cancelled. The
    batches of a non-streamed answer are read whole here."""
    provider = candidate.provider
    candidate.tries += 1
    candidate.error = None
    request = route.request
    request.upstream_model = upstream_model = provider.settings.model or route.model.name
    events = provider.events(request.for_provider(provider))
    received: list[Batch] = []
    try:
        first = await anext(events)
        if len(first) != 1 or not isinstance(first[0], Started):
            await _aclose(events)
            candidate.fail(
                UpstreamProtocolError(
                    f"Upstream {provider.label} did not start its answer", upstream=provider.label
                )
            )
            return None
        if request.stream:
            return Opened(provider, upstream_model, _Watched(events, candidate, route))
        # The rest of a started non-streamed answer: broken off by the upstream, it is a failed
        # attempt like any other, and an unbilled one. An answer read to its end needs no
        # ``aclose``. (Read here rather than in a coroutine of its own: one less per answer.)
        try:
            async for batch in events:
                received.append(batch)
        except UpstreamError as exc:
            candidate.fail(exc)
            _cut(candidate, route, exc, received)
            await _aclose(events)
            return None
        except BaseException:
            await _aclose(events)
            raise
    except UpstreamError as exc:  # raised by the first ``anext``: the rest handles its own
        candidate.fail(exc)
        _log_failure(provider, exc)
        if isinstance(exc, UpstreamStatus) and exc.upstream_status in _CLIENT_FAULT:
            candidate.error = None
            candidate.record(True)  # the upstream is well; the request is not
            raise InvalidRequest(f"The upstream rejected the request: {exc.message}") from None
        return None
    except StopAsyncIteration:
        candidate.fail(
            UpstreamProtocolError(
                f"Upstream {provider.label} answered nothing", upstream=provider.label
            )
        )
        return None
    except asyncio.CancelledError as exc:
        if isinstance(exc, AnswerCancelled):
            raise
        await _aclose(events)
        raise AnswerCancelled(route.model, provider.label, _collected(received)) from None
    candidate.record(True)
    return Opened(provider, upstream_model, Replay(received))


def _collected(batches: Sequence[Batch]) -> Collected:
    collected = Collected()
    for batch in batches:
        for event in batch:
            collected.add(event)
    return collected


class Replay:
    """The batches of a non-streamed answer read whole, as the answer's events (a plain
    iterator, not an async generator: no event-loop hooks; closing drops what is left).
    ``batches`` holds them all: a reader that finds a :class:`Replay` reads that list
    instead (no coroutine, no ``StopAsyncIteration`` per answer)."""

    __slots__ = ("_batches", "batches")

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self._batches = iter(batches)

    def __aiter__(self) -> Replay:
        return self

    async def __anext__(self) -> Batch:
        batch = next(self._batches, None)
        if batch is None:
            raise StopAsyncIteration
        return batch

    async def aclose(self) -> None:
        self._batches = iter(())


class _Watched:
    """A started stream's events, giving the upstream its outcome when the answer is over: a
    success when it completes or is closed early (the client left), a failure when the
    upstream breaks it off. Once the events have ended (their outcome recorded), closing
    has nothing left to do."""

    __slots__ = ("_candidate", "_events", "_route")

    def __init__(self, events: AsyncIterator[Batch], candidate: _Candidate, route: _Route) -> None:
        self._events = events
        self._candidate = candidate
        self._route = route

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> Batch:
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            self._candidate.record(True)
            raise
        except UpstreamError as exc:
            candidate = self._candidate
            if not candidate.recorded:
                candidate.fail(exc)
                _cut(candidate, self._route, exc, ())
            raise

    async def aclose(self) -> None:
        candidate = self._candidate
        if not candidate.recorded:  # closed before its end: the client left
            candidate.record(True)  # nothing went wrong on the upstream's side
            await _aclose(self._events)


def _cut(
    candidate: _Candidate, route: _Route, error: UpstreamError, received: Sequence[Batch]
) -> None:
    """An answer the upstream broke off after it started: a failure for its health, and for a
    non-streamed one, an attempt relaygate may pay for and does not charge."""
    provider, model, request = candidate.provider, route.model, route.request
    candidate.record(False)
    if route.metrics is not None:
        route.metrics.answer_cut(model.name, provider.label, request.stream)
    if request.stream:
        log.warning("upstream %s broke off a streamed answer: %s", provider.label, error)
        return
    guess = prompt_token_guess(request.request, model.settings.image_token_estimate, model.pixels)
    usage = _collected(received).usage_or_estimate(guess)
    tokens = usage.prompt_tokens + usage.completion_tokens
    if route.metrics is not None:
        route.metrics.unbilled(model.name, provider.label, tokens)
    log.warning(
        "request %s: upstream %s broke off its answer after accepting it (%s); status"
        " unbilled_attempt: about %d tokens the upstream may bill, not charged to the key;"
        " the next upstream, if any, is tried",
        request.request_id,
        provider.label,
        error,
        tokens,
    )


async def _aclose(events: AsyncIterator[Batch]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _nothing_answered(
    model: CatalogModel, tried: list[_Candidate], skipped: list[_Candidate]
) -> ApiError:
    """The error when no upstream of ``model`` answered.

    Every upstream refused for rate (a 429 now, or skipped for the pause a 429 asked for): 429
    (the upstreams' limits say when to come back, and OpenAI's SDKs back off on a 429 with its
    ``Retry-After``). Some refused for rate or are out of rotation, the others failed: 503 with
    the soonest of those waits (retrying then may work; a 502 would say the model is broken).
    Otherwise the last upstream's error (502).
    """
    now = time.monotonic()
    limited = [c for c in tried if c.rate_limited()]
    limited += [c for c in skipped if c.health.rate_limited_for() > 0]
    ejected = [c for c in skipped if c not in limited]
    failed = [c.error for c in tried if c.error is not None and not c.rate_limited()]
    waits = [c.wait(now) for c in limited + ejected]
    if limited and not ejected and not failed:
        return UpstreamsRateLimited(
            f"Every upstream of model {model.name!r} is rate-limited right now (their limits,"
            " not this key's)",
            retry_after=min(waits),
        )
    if not waits:
        return failed[-1]  # every upstream was tried, and none refused for rate
    parts = []
    if limited:
        parts.append("rate-limited (" + ", ".join(c.provider.label for c in limited) + ")")
    if ejected:
        out = ", ".join(c.provider.label for c in ejected)
        parts.append(f"out of rotation after repeated failures ({out})")
    message = f"No upstream of model {model.name!r} can serve right now: " + "; ".join(parts)
    if failed:
        message += f"; the others failed: {failed[-1].message}"
    return UpstreamsUnavailable(message, retry_after=min(waits))


def _log_failure(provider: Provider, error: UpstreamError) -> None:
    if isinstance(error, UpstreamStatus) and error.upstream_status in (401, 403):
        log.error(
            "upstream %s rejects the gateway's credentials (HTTP %s): check its api_key: %s",
            provider.label,
            error.upstream_status,
            error.message,
        )
    else:
        log.warning("upstream %s failed: %s", provider.label, error)
