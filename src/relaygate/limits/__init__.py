"""Per-key rate limits: RPM, TPM (GCRA) and concurrency."""

from relaygate.limits.gcra import Gcra
from relaygate.limits.memory import MemoryLimiter, Permit

__all__ = ["Gcra", "MemoryLimiter", "Permit"]
