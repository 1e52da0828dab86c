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
    Column("key_id", String(40), nullable=False, index=True),
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
