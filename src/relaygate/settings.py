"""The one settings object, built once from the config file and ``RELAYGATE_*`` variables.

Nothing else in relaygate reads ``os.environ``: the CLI calls :func:`load_settings` and passes the
result to ``create_app()`` and to the commands.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
import yaml

from relaygate.errors import ConfigError

_T = TypeVar("_T")
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

DEFAULT_DATABASE_URL = "sqlite:///relaygate.db"
SIMULATOR_MODEL = "relaygate-simulator"


PRICE_CHANGING_FIELDS = (
    "service_tier",
    "web_search_options",
    "audio",
    "modalities",
    "prediction",
    "store",
)
"""Request fields that can make an upstream charge more than the tokens relaygate counts; a
request using one is refused (400 naming it) unless its model prices or allows it (see the
README's "Price-changing fields")."""

MESSAGES_TOKEN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "stream", "temperature", "top_p",
        "top_k", "stop_sequences", "tools", "tool_choice", "thinking", "metadata",
        "cache_control", "context_management", "output_config",
    }
)  # fmt: skip
"""Top-level fields of a Messages request that are billed as tokens only (what Claude Code
sends included); any other passes to an Anthropic upstream only if ``allow_fields`` names it."""
_MESSAGES_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")

DEFAULT_MESSAGES_BETAS = (
    "prompt-caching-2024-07-31",
    "extended-cache-ttl-2025-04-11",
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
    "token-efficient-tools-2025-02-19",
    "claude-code-20250219",
    "context-management-2025-06-27",
    "prompt-caching-scope-2026-01-05",
    "effort-2025-11-24",
    "thinking-token-count-2026-05-13",
)
"""``anthropic-beta`` values a client may send through ``/v1/messages`` by default: prompt
caching, interleaved thinking, tool streaming and what Claude Code sends; none changes the
price of a token (``context-1m-...``, say, does, and is dropped)."""


class Pricing(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """USD per one million tokens. ``cached_input`` defaults to ``input``."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    """Prompt tokens read from the upstream's prompt cache (defaults to ``input``)."""
    cache_write: Decimal | None = None
    """Prompt tokens written to the upstream's prompt cache for 5 minutes (Anthropic's
    ``cache_control``); defaults to 1.25 times ``input``, as Anthropic charges."""
    cache_write_1h: Decimal | None = None
    """Prompt tokens written to the prompt cache for 1 hour (``cache_control`` with
    ``ttl: "1h"``); defaults to 2 times ``input``, as Anthropic charges."""
    service_tiers: dict[str, Decimal] = msgspec.field(default_factory=dict)
    """Cost multipliers by ``service_tier`` (e.g. ``{flex: 0.5, priority: 2.0}``): a request
    asking for a listed tier is accepted, and its reservation and charge are multiplied (the
    charge rounded up to the micro-dollar). Unlisted tiers other than ``auto`` and ``default``
    get 400."""


class UpstreamSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One upstream serving a model."""

    provider: str
    """Provider name: ``openai`` (and OpenAI-compatible servers), ``azure``, ``anthropic``,
    ``gemini`` or ``simulator``."""
    base_url: str | None = None
    """The upstream API root, e.g. ``https://api.openai.com/v1``."""
    api_key: str | None = None
    """The upstream's key; ``${VAR}`` reads it from the environment. Never logged."""
    model: str | None = None
    """The upstream's own model name; defaults to the public name."""
    name: str | None = None
    """A label for logs, metrics, the ledger and the ``x-relaygate-upstream`` header."""
    connect_timeout: PositiveFloat = 10.0
    """Seconds to establish the connection."""
    read_timeout: PositiveFloat = 300.0
    """Seconds to wait for the next byte of an answer."""
    max_body_bytes: PositiveInt = 64 * 1024 * 1024
    """Largest non-streamed answer read from this upstream; a larger one is dropped and the
    client gets 502 ``upstream_error``. Generous for answers that carry base64 images."""
    max_line_bytes: PositiveInt = 32 * 1024 * 1024
    """Longest line of a streamed answer (one SSE ``data:`` line, so one event's payload); a
    longer one ends the stream with an upstream error. Room for a large base64 image."""
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    """Provider-specific options (the simulator's latency, for example)."""
    priority: int = 0
    """Lower goes first: upstreams of a higher priority serve only when every one of a lower
    priority is failing or out of rotation."""
    weight: PositiveFloat = 1.0
    """Share of traffic among the upstreams of the same priority (weighted random)."""
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    """Further attempts on this upstream after a connect error, 429 or 5xx (before the first
    byte of an answer), with exponential back-off and jitter, honouring ``Retry-After``."""
    health_window_seconds: PositiveFloat = 60.0
    """The sliding window of request outcomes the failure rate is taken over."""
    health_min_requests: PositiveInt = 5
    """Outcomes the window must hold before the upstream can be taken out of rotation."""
    health_failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Failure rate over the window at which the upstream is taken out of rotation."""
    health_cooldown_seconds: PositiveFloat = 30.0
    """Seconds out of rotation before one trial request probes the upstream again."""


class ModelSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One public model."""

    pricing: Pricing
    max_output_tokens: PositiveInt = 16384
    """The largest ``max_tokens`` a request may ask for; the reservation's default."""
    vision: bool = False
    """Whether ``image_url`` content parts are accepted."""
    upstreams: list[UpstreamSettings] = msgspec.field(default_factory=list)
    image_token_estimate: PositiveInt = 1445
    """Prompt tokens reserved for each image (not ``detail: "low"``, which is 85) until the
    upstream reports the real count; 1445 is the most OpenAI's tile formula gives an image."""
    fallbacks: list[str] = msgspec.field(default_factory=list)
    """Models tried, in order, when every upstream of this one fails (a request's own
    ``models`` array takes precedence)."""
    allow_fields: list[str] = msgspec.field(default_factory=list)
    """Price-changing request fields (:data:`PRICE_CHANGING_FIELDS`) this model passes to its
    upstreams although relaygate bills only the tokens they report; by default each gets 400.
    For ``/v1/messages`` also: a server tool (``web_search`` or ``web_search_20250305``), a
    top-level field (``mcp_servers``, ``container``, ...), ``document_url``, ``document_file``
    (:mod:`relaygate.protocol.anthropic_messages.priced`)."""


class ImageSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Image inputs (``image_url`` parts): limits, fetching and forwarding."""

    max_bytes: PositiveInt = 10 * 1024 * 1024
    """Largest image accepted, in bytes (downloaded or base64-decoded); larger ones get 413."""
    max_images: PositiveInt = 16
    """Most ``image_url`` parts in one request; more get 400."""
    max_total_bytes: PositiveInt = 64 * 1024 * 1024
    """Most image bytes one request may bring in, all its images together; more gets 413."""
    connect_timeout: PositiveFloat = 5.0
    """Seconds to connect to the server of an image URL."""
    fetch_timeout: PositiveFloat = 15.0
    """Seconds for a whole image fetch (name lookup, redirects and download); a slower server
    gets 400, however steadily it trickles bytes."""
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3
    """Redirects followed per image URL; each hop is checked like the first URL."""
    allow_internal: list[str] = msgspec.field(default_factory=list)
    """Internal hosts that image URLs may reach although their addresses are not public: host
    names, IP addresses or CIDR networks, each with an optional port (``images.corp.example``,
    ``10.1.2.0/24``, ``127.0.0.1:9000``, ``[fd00::/8]:8443``). Empty (the default) refuses every
    loopback, private, link-local, shared, multicast and reserved address."""
    forward_urls: bool = False
    """Send checked http(s) image URLs to upstreams unchanged, to fetch themselves; when false,
    the bytes relaygate checked are sent inline as base64 ``data:`` URLs."""
    fetch_connections: PositiveInt = 256
    """Most image fetches in flight per worker, all keys together (the connection pool)."""
    per_key_fetches: PositiveInt = 16
    """Most image fetches one key may have in flight per worker; its further fetches wait
    for one of its own (within ``fetch_timeout``). Must be below ``fetch_connections``, so that
    one key never holds the whole pool and the others find free connections."""
    per_key_fetch_seconds: PositiveFloat = 240.0
    """Seconds of image fetching one key may use per minute and worker, its concurrent fetches
    added up (slow and timed-out ones included; cache hits and ``data:`` URLs are free). A key
    that has spent it gets 429 for requests that need a fetch until it has recovered. The
    default is one burst of ``per_key_fetches`` fetches that each take the whole default
    ``fetch_timeout``."""
    cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024
    """Memory for fetched images, reused by URL and shared by content hash; 0 turns it off.
    The bound covers everything the cache holds: each distinct content, every URL and a fixed
    overhead per entry."""
    cache_seconds: PositiveFloat = 300.0
    """How long a fetched image is reused for the same URL; expired entries are dropped."""

    def __post_init__(self) -> None:
        # Imported here: relaygate.media imports this module.
        from relaygate.media.addresses import parse_allow_rule

        if self.per_key_fetches >= self.fetch_connections:
            raise ValueError(
                f"per_key_fetches ({self.per_key_fetches}) must be below fetch_connections"
                f" ({self.fetch_connections}), so that one key cannot hold every connection"
            )
        for i, entry in enumerate(self.allow_internal):
            try:
                parse_allow_rule(entry)
            except ValueError as exc:
                raise ValueError(f"allow_internal[{i}]: {exc}") from None


class OtelSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """OpenTelemetry traces (``pip install 'relaygate[otel]'``), exported over OTLP/HTTP."""

    enabled: bool = False
    """Trace every model request (a server span, with child spans for admission, images, each
    upstream attempt and settlement). Off (the default), nothing of OpenTelemetry is loaded."""
    endpoint: str | None = None
    """The OTLP/HTTP traces URL (``http://collector:4318/v1/traces``). Unset: the SDK's
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (plus
    ``/v1/traces``), else ``http://localhost:4318/v1/traces``."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Headers sent with every export (a collector's credentials: ``${VAR}`` reads them from
    the environment). Empty: the SDK's ``OTEL_EXPORTER_OTLP_HEADERS``. Never logged."""
    service_name: str | None = None
    """The ``service.name`` of the spans. Unset: ``OTEL_SERVICE_NAME``, else ``relaygate``
    (``OTEL_RESOURCE_ATTRIBUTES`` adds attributes either way)."""
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    """The share of requests traced (drawn per request); a request with a ``traceparent`` header
    follows its caller's sampling decision instead."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything relaygate is configured with."""

    database_url: str = DEFAULT_DATABASE_URL
    """``sqlite:///relaygate.db`` (the default) or ``postgresql://...``."""
    redis_url: str | None = None
    """Optional ``redis://...`` for limits shared across replicas."""
    log_level: str = "info"
    """``debug``, ``info``, ``warning`` or ``error``: relaygate's own log lines. Libraries log
    warnings and errors only, unless named in ``log_debug_loggers``."""
    log_debug_loggers: list[str] = msgspec.field(default_factory=list)
    """Library loggers that follow ``log_level`` too, e.g. ``[sqlalchemy.engine, aiosqlite]``
    (each with its children); every other library logs warnings and errors only."""
    log_format: Literal["text", "json"] = "text"
    """``text`` (``date time LEVEL logger: message``) or ``json`` (one JSON object a line, the
    request log's fields as the object's own)."""
    request_log: bool = True
    """One line per request on the ``relaygate.access`` logger (id, key id, model, upstream,
    status, latency, tokens, cost; never a key), whatever ``log_level`` is; ``false`` turns
    it off."""
    operator_token: str | None = None
    """The credential of the operator endpoints, ``GET /health/details`` and ``GET /metrics``
    (``Authorization: Bearer <operator_token>``; at least 16 characters). Unset, both answer
    403. API keys are never accepted there. A secret: never logged or echoed."""
    # --- people and sign-in (console users, sessions, the client's address) ----------------
    session_lifetime_seconds: PositiveInt = 12 * 3600
    """The longest a console session lasts from sign-in, however active (absolute expiry)."""
    session_idle_seconds: PositiveInt = 30 * 60
    """A console session unused for this long ends (idle expiry; each use moves it forward)."""
    sign_in_window_seconds: PositiveInt = 15 * 60
    """The window sign-in failures are counted over, per address and per email."""
    sign_in_failures_per_email: PositiveInt = 5
    """Failed sign-ins for one email within the window; more attempts get 429 (with
    ``Retry-After``) until the window ends, whether the email exists or not."""
    sign_in_failures_per_address: PositiveInt = 20
    """Failed sign-ins from one client address (an IPv6 address counts by its /64) within the
    window; more attempts get 429 until the window ends."""
    password_min_length: Annotated[int, msgspec.Meta(ge=8, le=256)] = 12
    """The fewest characters a console password may have (at most 1024 bytes in UTF-8)."""
    password_hash_time_cost: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    """argon2id passes over memory (RFC 9106's second recommendation: 3). A stored hash made
    with other parameters is re-hashed at its user's next sign-in."""
    password_hash_memory_kib: Annotated[int, msgspec.Meta(ge=8192, le=4 * 1024 * 1024)] = 65536
    """argon2id memory per hash, in KiB (64 MiB). At most a few hashes run at once per process
    (one per CPU, up to 4), which bounds what sign-ins can take."""
    password_hash_parallelism: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    """argon2id lanes per hash."""
    purge_interval_seconds: PositiveFloat = 600.0
    """How often each worker deletes expired console sessions and ended sign-in throttle
    windows (first at start; several replicas doing it at once is harmless)."""
    max_keys_per_account: PositiveInt = 100
    """The most keys an account may hold (revoked keys do not count); creating one more is a
    409 naming this limit, in the admin API and the CLI."""
    admin_rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 600
    """Admin API requests per minute allowed to each principal (admin token, console user) and
    to each client address (an IPv6 address counts by its /64); more get 429 with
    ``Retry-After`` until the minute ends. Counted in Redis when ``redis_url`` is set (across
    replicas), else in each process. 0 turns it off."""
    trusted_proxy_headers: list[str] = msgspec.field(default_factory=list)
    """Proxy headers that name the client's address and scheme, honoured only on connections
    from ``trusted_proxies``: any of ``x-forwarded-for``, ``x-forwarded-proto`` and
    ``forwarded`` (RFC 7239). Empty (the default): none is trusted, the connection's own peer
    and scheme count."""
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    """Addresses or CIDR networks of the reverse proxies in front of relaygate: their
    ``trusted_proxy_headers`` are honoured, and the client is the right-most address in them
    that is not one of these."""
    cors_allowed_origins: list[str] = msgspec.field(default_factory=list)
    """Origins whose browser scripts may call the ``/v1`` API (``https://app.example.com``,
    exactly as the browser sends it; ``*`` for any): their preflight gets 204 and every answer,
    errors included, the CORS headers. Empty (the default): CORS is off. Credentials (cookies)
    are never allowed cross-origin; the ``Authorization`` header is."""
    key_refresh_seconds: PositiveFloat = 0.5
    """How often the in-memory key cache picks up new, revoked and re-credited keys."""
    stream_keepalive_seconds: PositiveFloat = 10.0
    """Seconds between SSE comment keep-alives while a stream waits for its first token."""
    disconnect_drain_seconds: PositiveFloat = 30.0
    """After a client drops a stream, how long relaygate keeps reading the upstream for its
    usage before it cancels and charges what it received."""
    messages_betas: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_MESSAGES_BETAS))
    """``anthropic-beta`` values of a ``/v1/messages`` client passed to an Anthropic upstream
    (after the upstream's own ``betas`` option); others are dropped, as they may change the
    price (``context-1m-...``)."""
    max_request_bytes: PositiveInt = 32 * 1024 * 1024
    """Largest request body accepted; larger ones get 413. A Responses request continuing a
    stored conversation may send at most this with its history (400 above)."""
    max_head_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    """Largest request line and headers together, in bytes; larger ones get 431 and a close."""
    head_timeout_seconds: PositiveFloat = 20.0
    """Seconds a client has to send a whole request head once it has begun; then 408 and a
    close."""
    body_timeout_seconds: PositiveFloat = 30.0
    """Seconds a request body may go without a byte arriving while it is awaited; then 408 and
    a close (the request ends as a client disconnect)."""
    send_timeout_seconds: PositiveFloat = 60.0
    """Seconds a response may wait on a client that does not read; then the connection is
    dropped and the request ends as a client disconnect (billed by the disconnect rule)."""
    max_connections: PositiveInt = 2048
    """Open client connections per process; one more is answered 503 (``Retry-After: 1``) and
    closed. Capped at start to what the process's open-file limit leaves room for."""
    max_body_bytes_in_flight: PositiveInt = 256 * 1024 * 1024
    """Request body bytes held per process by requests in flight (from before their bodies are
    read until they are answered); a request whose body would pass it gets 503 with
    ``Retry-After``. Bodies up to 64 KiB are not counted: the connection limit bounds them."""
    ledger_flush_seconds: PositiveFloat = 0.2
    """How often settled requests are written to the ledger."""
    ledger_batch_size: PositiveInt = 512
    """Most ledger rows written in one transaction."""
    ledger_max_pending: PositiveInt = 100_000
    """Unwritten ledger rows kept while the store is unreachable; past this, new requests get
    503 until it is back."""
    ledger_spill_path: str = "relaygate-ledger-spill.jsonl"
    """Deprecated (the journal replaces it): a spill file left here by an earlier version is
    written to the ledger at start; nothing writes it any more."""
    journal_path: str = "relaygate-journal"
    """Directory of the ledger journal: each process appends every settled request's row (and
    each admitted request) to its own file there before the response ends; the next start
    replays what the store lacks. Files are created 0600."""
    journal_fsync: Literal["always", "everysec", "no"] = "everysec"
    """When the journal is forced to disk. A killed process loses nothing under any policy;
    after a power loss, ``always`` loses nothing, ``everysec`` up to about a second of rows,
    ``no`` what the operating system had not written yet (typically up to 30 s)."""
    shutdown_grace_seconds: PositiveFloat = 20.0
    """On SIGTERM, how long requests in flight may run; past it, streams end with an SSE error
    event and other requests get 503, each billed as ``cancelled``. A second SIGTERM or Ctrl-C
    ends them at once. The orchestrator's kill timeout must exceed this plus 5 s (Kubernetes'
    ``terminationGracePeriodSeconds`` is 30 by default, ``docker stop`` waits 10 s: use
    ``docker stop -t 30``)."""
    redis_key_prefix: str = "relaygate"
    """Prefix of every Redis key relaygate uses (several deployments can share one Redis)."""
    redis_timeout_seconds: PositiveFloat = 5.0
    """Seconds to connect to Redis, or to wait for one command, before it counts as unreachable
    (credit admission then gets 503). Commands take microseconds; the margin is for a busy
    event loop, which delays reading an answer that has already arrived."""
    lease_seconds: PositiveFloat = 30.0
    """With Redis: a request's credit reservation and concurrency slot are leases of this
    length, renewed every third of it while the request lives (one batched call per process).
    A replica that dies frees them within one lease."""
    reservation_ttl_seconds: PositiveFloat = 3600.0
    """With Redis: the longest a single request's lease is renewed. A request still running
    after this loses its reservation and slot (it is still charged when it ends)."""
    pending_reconcile_seconds: PositiveFloat = 60.0
    """With Redis: charges still pending (settled, not yet reported written to the ledger)
    after this many seconds are reconciled with the ledger, checked this often: moved to
    ``used`` if their row is in the store, dropped if the process that owed the row is dead."""
    # --- low-balance alerts (accounts/alerts.py) ---
    alert_webhook_url: str | None = None
    """Where low-balance alerts are POSTed (``http(s)://...``; redirects are not followed).
    Unset (the default), alerts are off: no account is checked and nothing is recorded."""
    alert_webhook_secret: str | None = None
    """The HMAC-SHA256 key that signs each alert (``X-Relaygate-Signature``); required with
    ``alert_webhook_url``, at least 16 characters. A secret: never logged or echoed."""
    alert_check_seconds: PositiveFloat = 10.0
    """How often each replica looks for accounts that crossed their low-balance threshold and
    sends the alerts that are due (retries go out on the first check after their delay)."""
    alert_max_attempts: PositiveInt = 8
    """Attempts to deliver one alert before it is given up (recorded as failed)."""
    alert_retry_base_seconds: PositiveFloat = 5.0
    """The delay before the second attempt; each further one doubles it (at most an hour)."""
    alert_timeout_seconds: PositiveFloat = 10.0
    """Seconds one delivery attempt may take, connecting and answering together."""
    billing_url: str | None = None
    """Where a caller out of credits is sent: the ``fallback_suggestion`` of every 402. Unset,
    it is the console's billing page (``<public_url>/console/billing``) while the console is
    on; with the console off, the 402 says in a sentence to ask the gateway's operator to add
    credits to the key's account."""
    console: bool = True
    """Serve the web console at ``/console`` (customers' keys, usage, request log and billing;
    the operator's accounts, codes, models, upstream health, admin tokens and audit log)."""
    public_url: str | None = None
    """The base URL clients reach relaygate at (``https://gateway.example.com``), for links it
    hands out: the 402's billing page and the first-run setup link. Unset, ``relaygate serve``
    uses ``http://<host>:<port>`` it listens on (set this behind a proxy or another name)."""
    clamp_output_to_balance: bool = True
    """When a request sets no output limit (``max_tokens`` / ``max_completion_tokens``) and
    what the key can spend cannot cover the model's maximum output, send the upstream the
    output limit the money affords (at least ``clamp_min_output_tokens``) instead of answering
    402. Off, such a request gets 402 naming the limit it could afford."""
    clamp_min_output_tokens: PositiveInt = 256
    """The fewest output tokens a clamped request is sent with: a balance that cannot afford
    this many after the prompt gets 402."""
    stored_responses: bool = False
    """Whether ``POST /v1/responses`` keeps answers (those not sent with ``store: false``) so
    that a later request can continue one with ``previous_response_id``. Off, nothing is kept
    and ``previous_response_id`` gets 400."""
    stored_response_seconds: PositiveInt = 30 * 86400
    """How long a stored response can be continued; older ones are purged."""
    otel: OtelSettings = msgspec.field(default_factory=OtelSettings)
    """Traces of every model request, exported over OTLP/HTTP (OpenTelemetry, an optional
    extra)."""
    images: ImageSettings = msgspec.field(default_factory=ImageSettings)
    """Image inputs: size and count limits, fetching (SSRF-safe), caching and forwarding."""
    models: dict[str, ModelSettings] = msgspec.field(default_factory=dict)
    """The catalog: public model name to pricing, limits and upstreams."""


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
_ENV_OVERRIDES = {
    "RELAYGATE_DATABASE_URL": "database_url",
    "RELAYGATE_REDIS_URL": "redis_url",
    "RELAYGATE_LOG_LEVEL": "log_level",
    "RELAYGATE_LOG_FORMAT": "log_format",
    "RELAYGATE_OPERATOR_TOKEN": "operator_token",
    "RELAYGATE_PUBLIC_URL": "public_url",
}
_LOG_LEVELS = {"debug", "info", "warning", "error"}
_DIGITS_LIMIT = 6
_MIN_OPERATOR_TOKEN = 16


def _expand(value: Any, env: Mapping[str, str], path: str, source: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the tree."""
    if isinstance(value, dict):
        return {
            k: _expand(v, env, f"{path}.{k}" if path else str(k), source) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, env, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if has_default is not None:
            return default or ""
        raise ConfigError(f"{source}: {path}: environment variable {name} is not set")

    return _ENV_PATTERN.sub(sub, value)


def _msgspec_path(error: msgspec.ValidationError) -> str:
    match = re.search(r"at `\$(.*)`", str(error))
    return match.group(1).lstrip(".") if match else ""


def _check_url(url: str, where: str, source: str, schemes: set[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        allowed = ", ".join(sorted(schemes))
        raise ConfigError(f"{source}: {where}: {url!r} is not a valid URL ({allowed})")


def _check_money(value: Decimal, where: str, source: str) -> None:
    exponent = value.as_tuple().exponent
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{source}: {where}: price must be a non-negative number")
    if isinstance(exponent, int) and -exponent > _DIGITS_LIMIT:
        raise ConfigError(f"{source}: {where}: price has more than 6 decimal places")


def _validate(settings: Settings, source: str) -> None:
    if settings.log_level not in _LOG_LEVELS:
        raise ConfigError(f"{source}: log_level: must be one of {sorted(_LOG_LEVELS)}")
    _check_url(settings.database_url, "database_url", source, {"sqlite", "postgresql"})
    if settings.redis_url is not None:
        _check_url(settings.redis_url, "redis_url", source, {"redis", "rediss", "unix"})
    token = settings.operator_token
    if token is not None and (len(token) < _MIN_OPERATOR_TOKEN or token != token.strip()):
        raise ConfigError(
            f"{source}: operator_token: must be at least {_MIN_OPERATOR_TOKEN} characters,"
            " without surrounding spaces"
        )
    _check_alerts(settings, source)
    _check_cors(settings, source)
    _check_sign_in(settings, source)
    if settings.public_url is not None:
        _check_url(settings.public_url, "public_url", source, {"http", "https"})
    if settings.otel.endpoint is not None:
        _check_url(settings.otel.endpoint, "otel.endpoint", source, {"http", "https"})
    for name, model in settings.models.items():
        for i, fallback in enumerate(model.fallbacks):
            if fallback not in settings.models or fallback == name:
                raise ConfigError(
                    f"{source}: models.{name}.fallbacks[{i}]: {fallback!r} is not another model"
                    " of this config"
                )
        for field in ("input", "output", "cached_input"):
            price = getattr(model.pricing, field)
            if price is not None:
                _check_money(price, f"models.{name}.pricing.{field}", source)
        _check_price_fields(name, model, source)
        for i, upstream in enumerate(model.upstreams):
            where = f"models.{name}.upstreams[{i}]"
            if upstream.base_url is not None:
                _check_url(upstream.base_url, f"{where}.base_url", source, {"http", "https"})


def _check_alerts(settings: Settings, source: str) -> None:
    if settings.alert_webhook_url is None:
        return
    url = settings.alert_webhook_url
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ConfigError(f"{source}: alert_webhook_url: {url!r} is not an http(s) URL")
    secret = settings.alert_webhook_secret
    if secret is None or len(secret) < _MIN_OPERATOR_TOKEN or secret != secret.strip():
        raise ConfigError(
            f"{source}: alert_webhook_secret: alerts are signed, so alert_webhook_url needs a"
            f" secret of at least {_MIN_OPERATOR_TOKEN} characters, without surrounding spaces"
        )


def _check_cors(settings: Settings, source: str) -> None:
    from relaygate.api.cors import check_origin  # imported here: relaygate.api imports this

    for i, origin in enumerate(settings.cors_allowed_origins):
        problem = check_origin(origin)
        if problem is not None:
            raise ConfigError(f"{source}: cors_allowed_origins[{i}]: {problem}")


TRUSTABLE_PROXY_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "forwarded")
"""The proxy headers ``trusted_proxy_headers`` may name."""


def _check_sign_in(settings: Settings, source: str) -> None:
    import ipaddress

    for i, name in enumerate(settings.trusted_proxy_headers):
        if name.lower() not in TRUSTABLE_PROXY_HEADERS:
            raise ConfigError(
                f"{source}: trusted_proxy_headers[{i}]: {name!r} is not one of"
                f" {', '.join(TRUSTABLE_PROXY_HEADERS)}"
            )
    for i, entry in enumerate(settings.trusted_proxies):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: trusted_proxies[{i}]: {entry!r} is not an address or CIDR network"
            ) from None


def _check_price_fields(name: str, model: ModelSettings, source: str) -> None:
    for tier, multiplier in model.pricing.service_tiers.items():
        where = f"models.{name}.pricing.service_tiers.{tier}"
        _check_money(multiplier, where, source)
        if multiplier == 0:
            raise ConfigError(f"{source}: {where}: a multiplier must be greater than 0")
    for i, field in enumerate(model.allow_fields):
        if field in PRICE_CHANGING_FIELDS:
            continue
        if field in MESSAGES_TOKEN_FIELDS or not _MESSAGES_FIELD.match(field):
            raise ConfigError(
                f"{source}: models.{name}.allow_fields[{i}]: {field!r} is not a price-changing"
                f" field (one of {', '.join(PRICE_CHANGING_FIELDS)}, or a Messages server tool,"
                " top-level field, document_url or document_file)"
            )


def _decimal_hook(type_: type, obj: Any) -> Any:
    if type_ is Decimal and isinstance(obj, (int, float, str)):
        try:
            return Decimal(str(obj))
        except InvalidOperation as exc:
            raise ValueError(f"not a number: {obj!r}") from exc
    raise NotImplementedError


_PATH_SETTINGS = ("journal_path", "ledger_spill_path")
"""Settings naming a file or directory: relative in a config file, they are the file's."""


def sqlite_url_under(url: str, base: Path) -> str:
    """``url`` with a relative SQLite path made relative to ``base``; any other URL as it is."""
    from sqlalchemy.engine import make_url  # imported here: the CLI's --help need not load it
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url  # _validate names the bad URL
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)


def _paths_under(settings: dict[str, Any], base: Path) -> None:
    """Resolve the relative paths of a config file against its folder (in place)."""
    url = settings.get("database_url")
    if isinstance(url, str):
        settings["database_url"] = sqlite_url_under(url, base)
    for name in _PATH_SETTINGS:
        value = settings.get(name)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            settings[name] = str(base / value)


def settings_from_mapping(
    data: Mapping[str, Any], source: str, env: Mapping[str, str], base: Path | None = None
) -> Settings:
    """Build and check settings from an already-parsed mapping (the file's contents).

    With ``base`` (the config file's folder), relative paths written in the file (a SQLite
    ``database_url``, ``journal_path``, ``ledger_spill_path``) are taken from there; the same
    settings from ``RELAYGATE_*`` variables, or left to their defaults, stay relative to the
    current folder."""
    expanded = _expand(dict(data), env, "", source)
    if base is not None:
        _paths_under(expanded, base)
    for var, key in _ENV_OVERRIDES.items():
        if var in env:
            expanded[key] = env[var]
    models = expanded.pop("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{source}: models: must be a mapping of model name to settings")
    settings = _convert(expanded, Settings, "", source)
    settings = msgspec.structs.replace(
        settings,
        models={
            str(name): _convert(model, ModelSettings, f"models.{name}", source)
            for name, model in models.items()
        },
    )
    _validate(settings, source)
    return settings


def _convert(data: Any, type_: type[_T], prefix: str, source: str) -> _T:
    """``msgspec.convert`` with errors as one line naming the file and the key's full path."""
    try:
        return msgspec.convert(data, type_, dec_hook=_decimal_hook)
    except msgspec.ValidationError as exc:
        path = _msgspec_path(exc)
        where = ".".join(p for p in (prefix, path) if p).replace(".[", "[") or "(top level)"
        problem = str(exc).split(" - at ")[0]
        raise ConfigError(f"{source}: {where}: {problem}") from None


def unserved_models(settings: Settings) -> list[str]:
    """Models that can answer nothing but 503 "no upstream configured": no upstream of their
    own and none among their fallbacks (``gpt-5.2`` of the built-in catalog without
    ``OPENAI_API_KEY``, say)."""
    models = settings.models
    return [
        name
        for name, model in models.items()
        if not model.upstreams and not any(models[f].upstreams for f in model.fallbacks)
    ]


def default_catalog(env: Mapping[str, str]) -> dict[str, Any]:
    """The catalog used without a config file: contract models go to OpenAI when
    ``OPENAI_API_KEY`` is set, and the simulator model works with no key at all."""

    def openai_upstreams(model: str) -> list[dict[str, Any]]:
        if not env.get("OPENAI_API_KEY"):
            return []
        return [
            {
                "provider": "openai",
                "name": "openai",
                "base_url": env.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                "api_key": env["OPENAI_API_KEY"],
                "model": model,
            }
        ]

    return {
        "gpt-5.2": {
            "pricing": {"input": "1.75", "cached_input": "0.175", "output": "14.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": openai_upstreams("gpt-5.2"),
        },
        "gpt-5.5": {
            "pricing": {"input": "5.0", "cached_input": "0.5", "output": "30.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": openai_upstreams("gpt-5.5"),
        },
        SIMULATOR_MODEL: {
            "pricing": {"input": "0.10", "cached_input": "0.01", "output": "0.40"},
            "max_output_tokens": 4096,
            "vision": True,
            "upstreams": [{"provider": "simulator", "name": "simulator"}],
        },
    }


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (``path``, else ``RELAYGATE_CONFIG``, else the built-in catalog)."""
    env = dict(os.environ) if env is None else env
    path = path or env.get("RELAYGATE_CONFIG") or None
    if path is None:
        return settings_from_mapping({"models": default_catalog(env)}, "(built-in defaults)", env)
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    return settings_from_mapping(data, source, env, base=Path(path).resolve().parent)
