"""Table definitions (SQLAlchemy Core) shared by SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    # ``active`` or ``suspended`` (a suspended account's keys answer 403).
    Column("status", String(16), nullable=False, default="active"),
    Column("created_at", BigInteger, nullable=False),
    Column("granted_micros", BigInteger, nullable=False, default=0),
    Column("used_micros", BigInteger, nullable=False, default=0),
    Column("unlimited", Boolean, nullable=False, default=False),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    # The low-balance alert threshold (``None``: no alert).
    Column("low_balance_micros", BigInteger, nullable=True),
    # The alert was sent since the balance last rose above the threshold.
    Column("low_balance_alerted", Boolean, nullable=False, default=False),
    # Shares the ``key_revisions`` counter with the keys: one cache refresh sees both.
    Column("revision", BigInteger, nullable=False, default=0, index=True),
)
"""An account owns the money: one balance for all its keys."""

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(20), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("models", Text, nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("granted_micros", BigInteger, nullable=False, default=0),
    Column("used_micros", BigInteger, nullable=False, default=0),
    Column("unlimited", Boolean, nullable=False, default=False),
    Column("revision", BigInteger, nullable=False, default=0, index=True),
    # The account the key belongs to (set for every key from migration 3 on).
    Column("account_id", String(40), nullable=True),
    Column("spend_limit_micros", BigInteger, nullable=True),
    # ``total``, ``day``, ``week`` or ``month`` (UTC calendar periods).
    Column("spend_limit_period", String(8), nullable=True),
    # What the key spent in the period that began at ``period_start``.
    Column("period_used_micros", BigInteger, nullable=False, default=0, server_default="0"),
    Column("period_start", BigInteger, nullable=False, default=0, server_default="0"),
    Index("api_keys_account", "account_id"),
)
"""A key. From migration 3 on, its ``used_micros`` is what the key itself spent (its account
holds the balance); ``granted_micros`` and ``unlimited`` are kept only as the migration found
them."""

ledger = Table(
    "ledger",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("key_id", String(40), nullable=False),  # ledger_key_created leads with it
    Column("model", String(200), nullable=False),
    Column("upstream", String(200), nullable=False),
    Column("upstream_model", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False, index=True),
    Column("status", String(40), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("image_tokens", Integer, nullable=False),
    Column("prompt_audio_tokens", Integer, nullable=False),
    Column("completion_audio_tokens", Integer, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("account_id", String(40), nullable=True),
    Column("input_cost_micros", BigInteger, nullable=False, default=0, server_default="0"),
    Column("cached_cost_micros", BigInteger, nullable=False, default=0, server_default="0"),
    Column("output_cost_micros", BigInteger, nullable=False, default=0, server_default="0"),
    Column("reasoning_cost_micros", BigInteger, nullable=False, default=0, server_default="0"),
    Column("api", String(16), nullable=False, default="chat", server_default="chat"),
    Column("cache_write_tokens", Integer, nullable=False, default=0, server_default="0"),
    Index("ledger_account_created", "account_id", "created_at"),
    Index("ledger_key_created", "key_id", "created_at"),
)

key_revisions = Table(
    "key_revisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)
"""One row: the last revision handed to a key change. Updating it inside the change's
transaction locks the row, so revisions follow commit order on every backend."""


# --- admin (migration 5): admin tokens, top-ups, redemption codes, the audit log -------------

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(20), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)
"""Credentials of scripts on the admin API: stored as SHA-256 hashes, like keys."""

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("note", String(500), nullable=True),
    # ``grant`` (an operator's top-up or adjustment) or ``code`` (a redeemed code).
    Column("source", String(16), nullable=False),
    # The client's ``Idempotency-Key``: a second grant with it is answered from this row.
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("actor", String(80), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The account's balance right after the grant (what a replay answers).
    Column("granted_after", BigInteger, nullable=False),
    Column("used_after", BigInteger, nullable=False),
    Index("credit_grants_account", "account_id", "created_at"),
)
"""Every change of an account's granted credits, with who made it."""

redemption_codes = Table(
    "redemption_codes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(20), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("created_by", String(80), nullable=False),
    Column("redeemed_at", BigInteger, nullable=True),
    Column("account_id", String(40), nullable=True),
)
"""Codes worth an amount, redeemed once into an account; stored as hashes."""

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    # Unix milliseconds.
    Column("at", BigInteger, nullable=False),
    # ``admin_token:ID``, ``user:ID`` or ``cli``.
    Column("actor", String(80), nullable=False),
    Column("address", String(64), nullable=True),
    Column("action", String(60), nullable=False),
    Column("target_type", String(40), nullable=False),
    Column("target_id", String(80), nullable=False),
    # The account the action concerns (a member reads its own account's entries).
    Column("account_id", String(40), nullable=True),
    Column("detail", Text, nullable=False),
    Index("audit_log_account", "account_id", "id"),
)
"""Every admin action: who, what, when, from where."""
# --- low-balance alerts (migration 8) --------------------------------------------------------

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    # The event id: in the payload and the ``X-Relaygate-Event-Id`` header, the same on every
    # attempt, so that receivers can drop a repeated delivery.
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("threshold_micros", BigInteger, nullable=False),
    # The balance (granted - used) the account had when the crossing was claimed.
    Column("balance_micros", BigInteger, nullable=False),
    # The JSON body, fixed at the claim: every attempt sends the same bytes.
    Column("payload", Text, nullable=False),
    # Unix milliseconds, as the ledger's ``created_at``.
    Column("created_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # The receiver's HTTP status of the last attempt, or ``None`` when it got no answer.
    Column("last_status", Integer, nullable=True),
    # Why the last attempt failed (``HTTP 500``, ``timeout``, ``ClientConnectorError``...).
    Column("last_error", String(200), nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    # When the next attempt is due; ``None`` once delivered or given up.
    Column("next_attempt_at", BigInteger, nullable=True),
    Index("alert_deliveries_account", "account_id", "created_at"),
    Index("alert_deliveries_due", "next_attempt_at"),
)
"""One low-balance alert and its delivery: written in the transaction that claims the crossing
(so a crash before it is sent loses nothing), sent at least once by whichever replica claims
it when it is due."""
# --- people and sign-in (migration 6) ----------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    # Normalised (trimmed, NFC, lower case): unique as the people who sign in see it.
    Column("email", String(254), nullable=False, unique=True),
    # An argon2id hash in PHC form (``$argon2id$v=19$m=...``); never the password.
    Column("password_hash", String(255), nullable=False),
    # ``admin`` (the operator, every account) or ``member`` (one account's owner).
    Column("role", String(16), nullable=False),
    # A member's account; ``None`` for an admin.
    Column("account_id", String(40), nullable=True, index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("password_changed_at", BigInteger, nullable=False),
    # Set when the user is disabled: no sign-in, and their sessions are gone.
    Column("disabled_at", BigInteger, nullable=True),
    Column("last_sign_in_at", BigInteger, nullable=True),
)
"""A person who signs in to the console (scripts use admin tokens instead)."""

sessions = Table(
    "sessions",
    metadata,
    # The public half of the cookie (``ses_...``): audit rows and listings name it.
    Column("id", String(40), primary_key=True),
    # SHA-256 of the cookie's secret half, compared in constant time; never the secret.
    Column("secret_hash", String(64), nullable=False),
    Column("user_id", String(40), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
    # The absolute end (``created_at`` + the lifetime then configured).
    Column("expires_at", BigInteger, nullable=False, index=True),
    # The idle end: moved forward (by ``idle_seconds``) as the session is used.
    Column("idle_expires_at", BigInteger, nullable=False),
    Column("idle_seconds", Integer, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    # The client address it was created from (after the trusted proxy headers).
    Column("address", String(64), nullable=True),
)
"""A console session: server-side, so that signing out or disabling a user ends it at once."""

sign_in_throttle = Table(
    "sign_in_throttle",
    metadata,
    # ``address:<sha256>`` or ``email:<sha256>``: who is throttled, hashed (an attempt's email
    # may be a typo or a password typed in the wrong field).
    Column("subject", String(80), primary_key=True),
    Column("window_start", BigInteger, nullable=False, index=True),
    Column("failures", Integer, nullable=False),
)
"""Sign-in attempts per address and per email in the current window, shared by every process
and replica (one atomic upsert per attempt)."""
# --- usage rollups (migration 7) ----------------------------------------------------------------

ROLLUP_SUMS = (
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "image_tokens",
    "prompt_audio_tokens",
    "completion_audio_tokens",
    "cost_micros",
    "input_cost_micros",
    "cached_cost_micros",
    "output_cost_micros",
    "reasoning_cost_micros",
    "latency_ms",
    "status_ok",
    "status_client_disconnected",
    "status_upstream_error",
    "status_cancelled",
    "status_interrupted",
    "status_other",
)
"""The totals a rollup row keeps: requests, the ledger's token kinds, the cost and its parts, the
summed latency, and the request count of each status (``status_other``: a status not listed)."""

usage_rollups = Table(
    "usage_rollups",
    metadata,
    # Which totals the row belongs to (see relaygate.store.rollups.Level): 0 = hour x account x
    # key x model (the base), 1 = day x account x key x model, 2 = day x account x key (model
    # ''), 3 = hour x model and 4 = day x model (account and key ''), 5 = hour x account x
    # model and 6 = day x account x model (key ''), 7 = week x account x key x model and 8 =
    # week x account x key (model ''). A query reads one level per part of its range, so no
    # row is counted twice.
    Column("level", SmallInteger, nullable=False),
    # Unix milliseconds at which the UTC hour or day begins.
    Column("bucket", BigInteger, nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    *(Column(name, BigInteger, nullable=False, default=0) for name in ROLLUP_SUMS),
    PrimaryKeyConstraint("level", "bucket", "account_id", "key_id", "model"),
    Index("usage_rollups_key", "level", "key_id", "bucket"),
    Index("usage_rollups_account", "level", "account_id", "bucket"),
    Index("usage_rollups_model", "level", "model", "bucket"),
    sqlite_with_rowid=False,  # rows in key order: a range of buckets is read in sequence
)
"""Ledger totals per hour and per day, kept as ledger rows are written (in the same
transaction): usage reports read these, never the ledger."""

ledger_model_created = Index("ledger_model_created", ledger.c.model, ledger.c.created_at)
ledger_status_created = Index(
    "ledger_status_created",
    ledger.c.status,
    ledger.c.created_at,
    sqlite_where=ledger.c.status != "ok",
    postgresql_where=ledger.c.status != "ok",
)
"""The request log's filters by model and by status (only the rare statuses other than ``ok``
are indexed; an ``ok`` filter reads the created_at index)."""

# --- the console's first-run setup link (migration 12) ------------------------------------------

console_setup = Table(
    "console_setup",
    metadata,
    # One row at most (id 1): the live setup link, or the used one.
    Column("id", Integer, primary_key=True),
    # SHA-256 of the link's token; never the token.
    Column("token_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # Set when the link created the first admin: it never works again.
    Column("used_at", BigInteger, nullable=True),
)
"""The one-time link ``relaygate serve`` prints while no admin exists."""

# --- stored responses (migration 11) ----------------------------------------------------------

stored_responses = Table(
    "stored_responses",
    metadata,
    Column("id", String(64), primary_key=True),
    # The owner: the key's account (the key's id for a key without one).
    Column("account_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("conversation", Text, nullable=False),
)
"""Answers of ``POST /v1/responses`` kept for ``previous_response_id`` (``stored_responses``):
each row holds the whole conversation up to and including its output, as Responses items in
JSON, so that continuing it is one read."""
