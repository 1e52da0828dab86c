"""The rows the store keeps: accounts, API keys and ledger entries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class AccountRecord:
    """An account: it owns the balance its keys spend."""

    id: str
    name: str
    created_at: int
    """Unix seconds."""
    status: str = "active"
    """``active`` or ``suspended``."""
    granted_micros: int = 0
    used_micros: int = 0
    unlimited: bool = False
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    low_balance_micros: int | None = None
    """The low-balance alert threshold (``None``: no alert)."""
    low_balance_alerted: bool = False
    revision: int = 0


@dataclass(slots=True)
class KeyRecord:
    """An API key as stored: only its hash, never the key itself."""

    id: str
    name: str
    key_hash: str
    prefix: str
    created_at: int
    """Unix seconds."""
    granted_micros: int = 0
    used_micros: int = 0
    unlimited: bool = False
    models: tuple[str, ...] | None = None
    """Models the key may use; ``None`` means every model."""
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    expires_at: int | None = None
    revoked_at: int | None = None
    revision: int = 0
    account_id: str = ""
    """The account whose balance the key spends."""
    spend_limit_micros: int | None = None
    """The key's own spend cap (``None``: only the account's balance bounds it)."""
    spend_limit_period: str | None = None
    """``total`` (over the key's lifetime), ``day``, ``week`` or ``month`` (UTC)."""
    period_used_micros: int = 0
    """What the key spent in the period that began at ``period_start`` (unix seconds)."""
    period_start: int = 0


@dataclass(slots=True)
class LedgerRow:
    """One charged request."""

    request_id: str
    key_id: str
    model: str
    upstream: str
    upstream_model: str
    created_at: int
    """Unix milliseconds."""
    status: str
    """``ok``, ``client_disconnected``, ``upstream_error``, ``cancelled`` or ``interrupted``."""
    cost_micros: int
    latency_ms: int
    stream: bool
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    image_tokens: int = 0
    prompt_audio_tokens: int = 0
    completion_audio_tokens: int = 0
    account_id: str = ""
    input_cost_micros: int = 0
    """The cost's parts at their prices: uncached input, cached input, output and reasoning."""
    cached_cost_micros: int = 0
    output_cost_micros: int = 0
    reasoning_cost_micros: int = 0
    api: str = "chat"
    """The API the client called: ``chat``, ``messages`` or ``responses``."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the upstream's prompt cache (part of ``prompt_tokens``; their
    cost is in ``input_cost_micros``)."""


@dataclass(slots=True)
class UsageSummary:
    """Totals over ledger rows, grouped by key and model."""

    key_id: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    image_tokens: int = 0
    cost_micros: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
