"""Prices, token estimates, credit reservation and settlement, and the ledger."""

from relaygate.accounting.credits import Account, CreditBook, MemoryCreditBook, Reservation
from relaygate.accounting.ledger import LedgerWriter
from relaygate.accounting.prices import Price, micros_to_usd, usd_to_micros

__all__ = [
    "Account",
    "CreditBook",
    "LedgerWriter",
    "MemoryCreditBook",
    "Price",
    "Reservation",
    "micros_to_usd",
    "usd_to_micros",
]
