"""Persistence: API keys and the ledger, on SQLite (default) or PostgreSQL."""

from relaygate.store.records import KeyRecord, LedgerRow, UsageSummary
from relaygate.store.sql import SqlStore

__all__ = ["KeyRecord", "LedgerRow", "SqlStore", "UsageSummary"]
