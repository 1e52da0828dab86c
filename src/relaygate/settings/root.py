"""The top level of the config file: :class:`Settings`, one flat mapping of settings.

A msgspec struct takes its fields from one base class only (two bases with fields conflict), so
the flat top level stays one class, its fields in sections by concept; the nested groups
(models and their upstreams, images, traces) have modules of their own.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from relaygate.settings.images import ImageSettings
from relaygate.settings.models import ModelSettings
from relaygate.settings.otel import OtelSettings
from relaygate.settings.types import PositiveFloat, PositiveInt

DEFAULT_DATABASE_URL = "sqlite:///relaygate.db"

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


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything relaygate is configured with."""

    # --- storage, logging and the operator endpoints ---
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
    # --- serving requests ---
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
    # --- client connections: sizes, times and counts (serving/) ---
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
    # --- the ledger and its journal, shutdown ---
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
    # --- Redis (limits and reservations across replicas) ---
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
    # --- links handed out, the console, output clamping, stored responses ---
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
    # --- nested groups (modules of their own) ---
    otel: OtelSettings = msgspec.field(default_factory=OtelSettings)
    """Traces of every model request, exported over OTLP/HTTP (OpenTelemetry, an optional
    extra)."""
    images: ImageSettings = msgspec.field(default_factory=ImageSettings)
    """Image inputs: size and count limits, fetching (SSRF-safe), caching and forwarding."""
    models: dict[str, ModelSettings] = msgspec.field(default_factory=dict)
    """The catalog: public model name to pricing, limits and upstreams."""
