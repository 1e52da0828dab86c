"""The tables as migration 1 created them (frozen: later migrations alter them, and
:mod:`relaygate.store.schema` holds the current shape)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

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
)

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
)
